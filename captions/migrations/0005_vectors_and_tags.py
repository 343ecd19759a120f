"""Search by meaning: the pgvector extension, image vectors with HNSW indexes, concept tags."""

import django.db.models.deletion
import django.db.transaction
import pgvector.django.bit
import pgvector.django.halfvec
import pgvector.django.indexes
import pgvector.django.vector
from django.conf import settings
from django.db import migrations, models
from django.db.utils import DatabaseError

NO_PGVECTOR = (
    "this Postgres has no pgvector extension, which imgcap needs (search by meaning): use a server "
    "that has it (docker-compose's pgvector/pgvector image, or `CREATE EXTENSION vector` as a superuser "
    "once it is installed), or unset DATABASE_URL to use the embedded server"
)


def create_vector_extension(apps, schema_editor):
    try:
        with schema_editor.connection.cursor() as cursor, django.db.transaction.atomic():
            cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except DatabaseError as exc:
        raise RuntimeError(f"{NO_PGVECTOR} ({exc})".strip()) from exc


class Migration(migrations.Migration):
    dependencies = [
        ("captions", "0004_image_heartbeat_at"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(create_vector_extension, migrations.RunPython.noop),
        migrations.CreateModel(
            name="ImageTag",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("label", models.CharField(max_length=100)),
                ("score", models.FloatField()),
                ("rank", models.PositiveSmallIntegerField(default=0)),
            ],
            options={
                "ordering": ["image_id", "rank"],
            },
        ),
        migrations.AddField(
            model_name="image",
            name="caption_embedding",
            field=pgvector.django.vector.VectorField(blank=True, dimensions=384, null=True),
        ),
        migrations.AddField(
            model_name="image",
            name="embedded_caption",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="captions.caption",
            ),
        ),
        migrations.AddField(
            model_name="image",
            name="features",
            field=pgvector.django.halfvec.HalfVectorField(blank=True, dimensions=1280, null=True),
        ),
        migrations.AddField(
            model_name="image",
            name="features_model_version",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="captions.modelversion",
            ),
        ),
        migrations.AddField(
            model_name="image",
            name="near_duplicate_of",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="near_duplicates",
                to="captions.image",
            ),
        ),
        migrations.AddField(
            model_name="image",
            name="perceptual_hash",
            field=pgvector.django.bit.BitField(blank=True, length=64, null=True),
        ),
        migrations.AddField(
            model_name="image",
            name="visual_embedding",
            field=pgvector.django.vector.VectorField(blank=True, dimensions=384, null=True),
        ),
        migrations.AddIndex(
            model_name="image",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=64,
                fields=["caption_embedding"],
                m=16,
                name="image_caption_embedding_hnsw",
                opclasses=["vector_cosine_ops"],
            ),
        ),
        migrations.AddIndex(
            model_name="image",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=64,
                fields=["visual_embedding"],
                m=16,
                name="image_visual_embedding_hnsw",
                opclasses=["vector_cosine_ops"],
            ),
        ),
        migrations.AddIndex(
            model_name="image",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=64,
                fields=["features"],
                m=16,
                name="image_features_hnsw",
                opclasses=["halfvec_cosine_ops"],
            ),
        ),
        migrations.AddIndex(
            model_name="image",
            index=pgvector.django.indexes.HnswIndex(
                ef_construction=64,
                fields=["perceptual_hash"],
                m=16,
                name="image_perceptual_hash_hnsw",
                opclasses=["bit_hamming_ops"],
            ),
        ),
        migrations.AddField(
            model_name="imagetag",
            name="image",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="tags", to="captions.image"
            ),
        ),
        migrations.AddField(
            model_name="imagetag",
            name="model_version",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="captions.modelversion"
            ),
        ),
        migrations.AddIndex(
            model_name="imagetag",
            index=models.Index(fields=["label", "image"], name="image_tag_label"),
        ),
        migrations.AddConstraint(
            model_name="imagetag",
            constraint=models.UniqueConstraint(
                fields=("image", "model_version", "label"), name="image_tag_unique"
            ),
        ),
        # Tag search matches stemmed words of the labels ("bananas" finds "banana").
        migrations.RunSQL(
            "CREATE INDEX image_tag_label_search ON captions_imagetag "
            "USING GIN (to_tsvector('english', label))",
            "DROP INDEX IF EXISTS image_tag_label_search",
        ),
    ]
