"""HTML forms of the plain site."""

from __future__ import annotations

from django import forms

from captions.models import Image


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Many files in one field (Django's documented recipe); contents are checked by captions.ingest."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        if isinstance(data, list | tuple):
            return [forms.FileField.clean(self, item, initial) for item in data if item]
        return [forms.FileField.clean(self, data, initial)] if data else []


class UploadForm(forms.Form):
    images = MultipleFileField(label="Images", required=False, allow_empty_file=True)
    archive = forms.FileField(label="…or a zip archive", required=False, allow_empty_file=True)
    visibility = forms.ChoiceField(
        choices=Image.Visibility.choices, initial=Image.Visibility.PRIVATE, required=False
    )

    def clean_visibility(self) -> str:
        return self.cleaned_data.get("visibility") or Image.Visibility.PRIVATE

    def clean(self):
        data = super().clean()
        if not data.get("images") and not data.get("archive"):
            raise forms.ValidationError("Choose one or more images, or a zip archive.")
        return data


class CaptionForm(forms.Form):
    caption = forms.CharField(
        label="Your caption", max_length=1000, widget=forms.TextInput(attrs={"size": 60})
    )


class VisibilityForm(forms.Form):
    visibility = forms.ChoiceField(choices=Image.Visibility.choices)
