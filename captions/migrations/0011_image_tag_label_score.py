from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("captions", "0010_library"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="imagetag",
            index=models.Index(fields=["label", "-score"], name="image_tag_label_score"),
        ),
    ]
