"""The full-text search structures (migration 0002): a generated tsvector column and its GIN index."""

from __future__ import annotations

POSTGRES_FORWARD = [
    "ALTER TABLE captions_caption ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX captions_caption_search_gin ON captions_caption USING GIN (search_vector)",
]
POSTGRES_BACKWARD = [
    "DROP INDEX IF EXISTS captions_caption_search_gin",
    "ALTER TABLE captions_caption DROP COLUMN IF EXISTS search_vector",
]


def create_search_schema(schema_editor) -> None:
    """Migration forward: the generated tsvector column and its GIN index."""
    for sql in POSTGRES_FORWARD:
        schema_editor.execute(sql)


def drop_search_schema(schema_editor) -> None:
    for sql in POSTGRES_BACKWARD:
        schema_editor.execute(sql)
