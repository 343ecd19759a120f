"""Caption full-text search: a generated tsvector column with a GIN index (captions/search.py)."""

from django.db import migrations


def forward(apps, schema_editor):
    from captions.search import create_search_schema

    create_search_schema(schema_editor)


def backward(apps, schema_editor):
    from captions.search import drop_search_schema

    drop_search_schema(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("captions", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
