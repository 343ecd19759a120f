"""Finding images: by the words of their captions and by meaning (results.py fuses the two).

lexical.py: Postgres full-text search over every caption; semantic.py: pgvector nearest neighbours of
the query's sentence embedding (captions, photos) and concept tags; spelling.py: typo tolerance;
schema.py: the full-text structures of migration 0002.
"""

from captions.search.lexical import filter_captions
from captions.search.results import SearchHit, SearchResults, search_images
from captions.search.schema import create_search_schema, drop_search_schema

__all__ = [
    "SearchHit",
    "SearchResults",
    "create_search_schema",
    "drop_search_schema",
    "filter_captions",
    "search_images",
]
