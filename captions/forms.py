"""HTML forms of the plain site."""

from __future__ import annotations

from django import forms

from captions.ingest import split_urls
from captions.models import Image


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Many files in one field (Django's documented recipe); contents are checked by captions.ingest."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*,.heic,.heif"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        if isinstance(data, list | tuple):
            return [forms.FileField.clean(self, item, initial) for item in data if item]
        return [forms.FileField.clean(self, data, initial)] if data else []


class UploadForm(forms.Form):
    images = MultipleFileField(label="Images", required=False, allow_empty_file=True)
    archive = forms.FileField(
        label="A zip archive of images",
        required=False,
        allow_empty_file=True,
        widget=forms.ClearableFileInput(attrs={"accept": ".zip,application/zip"}),
    )
    urls = forms.CharField(
        label="Image URLs, one a line",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "https://example.org/photo.jpg"}),
    )
    visibility = forms.ChoiceField(
        label="Who can see them",
        choices=[(Image.Visibility.PRIVATE, "Only me"), (Image.Visibility.PUBLIC, "Everyone (public)")],
        initial=Image.Visibility.PRIVATE,
        required=False,
    )

    def clean_visibility(self) -> str:
        return self.cleaned_data.get("visibility") or Image.Visibility.PRIVATE

    def clean_urls(self) -> list[str]:
        return split_urls(self.cleaned_data.get("urls", ""))

    def clean(self):
        data = super().clean()
        if not data.get("images") and not data.get("archive") and not data.get("urls"):
            raise forms.ValidationError("Choose one or more images, a zip archive, or give image URLs.")
        return data


class CaptionForm(forms.Form):
    caption = forms.CharField(label="Your caption", max_length=1000, widget=forms.TextInput())


class VisibilityForm(forms.Form):
    visibility = forms.ChoiceField(choices=Image.Visibility.choices)


class LocationForm(forms.Form):
    share_location = forms.BooleanField(required=False)


class GalleryFilterForm(forms.Form):
    """The gallery's filters; unknown values fall back to "any" instead of failing the page."""

    show = forms.ChoiceField(
        label="Show",
        required=False,
        choices=[("", "All I can see"), ("mine", "Only mine"), ("public", "Only public")],
    )
    status = forms.ChoiceField(label="Status", required=False)
    # Any batch id filters (as the API's `batch` does); the menu offers the user's newest batches.
    batch = forms.IntegerField(label="Batch", required=False, min_value=1, widget=forms.Select)
    # A concept tag the model saw ("cat", "banana"): the tag links of the image page lead here.
    tag = forms.CharField(
        label="Tag", required=False, max_length=100, widget=forms.TextInput(attrs={"placeholder": "e.g. cat"})
    )

    # The order (selectors.IMAGE_SORTS); "newest upload first" when absent.
    sort = forms.ChoiceField(label="Order", required=False)

    # ?review=1: only captions the model is probably wrong about (selectors.needs_review).
    review = forms.BooleanField(
        label="Needs review", required=False, widget=forms.CheckboxInput(attrs={"value": "1"})
    )

    def __init__(
        self, *args, statuses: tuple[str, ...], batches: list, sorts: dict[str, str], **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["sort"].choices = [(key, text.split(" (")[0].capitalize()) for key, text in sorts.items()]
        self.fields["status"].choices = [("", "Any status"), *((s, s.capitalize()) for s in statuses)]
        self.fields["batch"].widget.choices = [
            ("", "Any batch"),
            *((b.pk, f"{b.title} · {b.created_at:%Y-%m-%d %H:%M}") for b in batches),
        ]
        asked = str(self.data.get("batch", ""))
        if asked.isdigit() and int(asked) not in {b.pk for b in batches}:
            self.fields["batch"].widget.choices.append((int(asked), f"#{asked}"))

    def filters(self) -> dict:
        """Keyword arguments for selectors.list_images (invalid fields are left out)."""
        self.is_valid()
        data = self.cleaned_data
        show = data.get("show") or ""
        return {
            "status": data.get("status") or None,
            "batch": data.get("batch"),
            "mine": show == "mine",
            "visibility": Image.Visibility.PUBLIC if show == "public" else None,
            "tag": data.get("tag") or None,
            "needs_review": bool(data.get("review")),
        }

    def order(self) -> str:
        """The order asked for (a key of selectors.IMAGE_SORTS); not a filter."""
        self.is_valid()
        return self.cleaned_data.get("sort") or "-added"
