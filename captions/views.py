"""The HTML site: upload, gallery, image page, search, batches, API token and guide.

Every page works without JavaScript (forms post, links page); the scripts in captions/static/captions/
add live progress, search as you type and the attention viewer on top, through the REST API.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from captions import selectors, thumbnails
from captions.forms import CaptionForm, GalleryFilterForm, LocationForm, UploadForm, VisibilityForm
from captions.ingest import RejectedInput
from captions.metadata import CAPTION_IN_FILE_FORMATS
from captions.services.accounts import regenerate_api_token
from captions.services.albums import get_or_create_album
from captions.services.batches import delete_batch, rename_batch
from captions.services.bulk import apply_to_images, check_images
from captions.services.images import (
    add_human_caption,
    delete_image,
    recaption_image,
    remove_human_captions,
    retry_image,
    set_share_location,
    set_visibility,
)
from captions.services.intake import create_batch
from captions.throttles import BATCH, RECAPTION, SEARCH, throttle_page

PAGE_SIZE = 24


def _page(request: HttpRequest, items, per_page: int = PAGE_SIZE):
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def _pager_extra(request: HttpRequest) -> str:
    """The current query string without `page`, ready to prefix `page=N` in pager links."""
    params = request.GET.copy()
    params.pop("page", None)
    encoded = params.urlencode()
    return encoded + "&" if encoded else ""


def gallery(request: HttpRequest) -> HttpResponse:
    batches = selectors.recent_batches(request.user)
    filters = GalleryFilterForm(
        request.GET, statuses=selectors.STATUSES, batches=batches, sorts=selectors.IMAGE_SORTS
    )
    sort = filters.order()
    images = selectors.list_images(request.user, **filters.filters(), sort=sort)
    page = _page(request, images)
    active = selectors.active_model_version()
    cards = [(image, selectors.choose_captions(image, active).best) for image in page]
    mine = request.user.is_authenticated and any(image.owner_id == request.user.pk for image, _ in cards)
    context = {
        "page": page,
        "cards": cards,
        "filters": filters,
        "filtered": any(filters.filters().values()),
        "order": selectors.IMAGE_SORTS[sort].split(" (")[0],
        "pager_extra": _pager_extra(request),
        # The selection bar, when the page shows some of the user's own images.
        "selectable": mine,
        "albums": list(selectors.list_albums(request.user)) if mine else [],
    }
    return render(request, "captions/gallery.html", context)


@login_required
@require_POST
@throttle_page(BATCH)
def image_bulk(request: HttpRequest) -> HttpResponse:
    """The gallery's selection: `ids` (checkboxes) and the `action` of the button pressed; back to
    `next` with what was done. Delete asks first; download hands over to the API's zip."""
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("captions:gallery")
    try:
        ids = [int(raw) for raw in request.POST.getlist("ids")]
    except ValueError:
        ids = []
    action = request.POST.get("action", "")
    if not ids:
        messages.error(request, "Select one or more of your photos first.")
        return redirect(back)
    if action == "download":
        return redirect(f"{reverse('api:image-zip')}?ids={','.join(map(str, ids))}")
    try:
        if action == "delete" and request.POST.get("confirm") != "1":
            images = check_images(request.user, ids)
            return render(request, "captions/bulk_delete.html", {"images": images, "next": back})
        album = None
        if action in ("add_to_album", "remove_from_album"):
            new_name = request.POST.get("new_album", "").strip()
            if new_name and action == "add_to_album":
                album, _ = get_or_create_album(owner=request.user, name=new_name)
            elif request.POST.get("album"):
                album = selectors.find_own_album(request.user, request.POST["album"])
        result = apply_to_images(owner=request.user, image_ids=ids, action=action, album=album)
        messages.success(request, result.summary(album.name if album is not None else None) + ".")
    except RejectedInput as exc:
        messages.error(request, exc.message)
    return redirect(back)


@login_required
@throttle_page(BATCH)
def upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST, request.FILES) if request.method == "POST" else UploadForm()
    # ?album=ID (the album page's "upload into it") preselects that album.
    chosen = (request.POST if request.method == "POST" else request.GET).get("album", "")
    page = {"form": form, "albums": list(selectors.list_albums(request.user)), "chosen_album": chosen}
    if request.method == "POST" and form.is_valid():
        try:
            album = selectors.find_own_album(request.user, chosen) if chosen else None
            result = create_batch(
                owner=request.user,
                album=album,
                files=form.cleaned_data["images"],
                archives=[form.cleaned_data["archive"]] if form.cleaned_data.get("archive") else [],
                urls=form.cleaned_data["urls"],
                visibility=form.cleaned_data["visibility"],
            )
        except RejectedInput as exc:
            form.add_error(None, exc.message)
            for item in getattr(exc, "rejected", [])[1:]:
                form.add_error(None, item.message)
            return render(request, "captions/upload.html", page, status=exc.status)
        for item in result.batch.rejected:
            messages.warning(request, f"Not accepted: {item['message']}")
        return redirect("captions:batch", pk=result.batch.pk)
    return render(request, "captions/upload.html", page, status=400 if form.errors else 200)


def image_page(request: HttpRequest, pk: int) -> HttpResponse:
    image = selectors.get_image(request.user, pk)
    choice = selectors.choose_captions(image, selectors.active_model_version())
    model_best = choice.candidates[0] if choice.candidates else None
    # HEIC and TIFF: browsers other than Safari show nothing, so the page shows a large WebP of it.
    display_copy = thumbnails.needs_display_copy(image)
    if display_copy:
        photo_url = f"{reverse('thumbnail', args=[image.pk])}?size={thumbnails.DISPLAY_SIZE}"
    else:
        photo_url = reverse("media", args=[image.file.name])
    context = {
        "image": image,
        "photo_url": photo_url,
        "display_copy": display_copy,
        "choice": choice,
        "model_best": model_best,
        "has_attention": bool(model_best is not None and model_best.attention),
        # The download cannot hold the caption: the page links its .xmp sidecar too.
        "caption_sidecar": choice.best is not None and image.format not in CAPTION_IN_FILE_FORMATS,
        "is_owner": image.owner_id == request.user.pk,
        "caption_form": CaptionForm(initial={"caption": choice.best.text if choice.best else ""}),
        "tags": list(image.tags.all()),
        "similar": selectors.similar_images(request.user, image, limit=8),
    }
    context["newer"], context["older"] = selectors.image_neighbours(request.user, image)
    if context["is_owner"]:
        context["albums_in"] = selectors.albums_of(request.user, image)
        inside = {album.pk for album in context["albums_in"]}
        context["other_albums"] = [a for a in selectors.list_albums(request.user) if a.pk not in inside]
    return render(request, "captions/image.html", context)


@login_required
@require_POST
def image_caption(request: HttpRequest, pk: int) -> HttpResponse:
    image = selectors.get_own_image(request.user, pk)
    form = CaptionForm(request.POST)
    if form.is_valid():
        try:
            add_human_caption(image=image, text=form.cleaned_data["caption"], author=request.user)
            messages.success(request, "Caption saved.")
        except RejectedInput as exc:
            messages.error(request, exc.message)
    else:
        messages.error(request, "The caption is empty or too long.")
    return redirect("captions:image", pk=pk)


@login_required
@require_POST
def image_caption_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """Back to the model's caption: the captions people wrote for the image are removed."""
    image = selectors.get_own_image(request.user, pk)
    try:
        remove_human_captions(image=image)
        messages.success(request, "Your caption is removed; the model's caption is shown again.")
    except RejectedInput as exc:
        messages.error(request, exc.message)
    return redirect("captions:image", pk=pk)


@login_required
@require_POST
@throttle_page(RECAPTION)
def image_recaption(request: HttpRequest, pk: int) -> HttpResponse:
    image = selectors.get_own_image(request.user, pk)
    try:
        if image.status == image.Status.FAILED:
            retry_image(image=image)
        else:
            recaption_image(image=image)
        messages.success(request, "Queued for captioning.")
    except RejectedInput as exc:
        messages.error(request, exc.message)
    return redirect("captions:image", pk=pk)


@login_required
@require_POST
def image_visibility(request: HttpRequest, pk: int) -> HttpResponse:
    image = selectors.get_own_image(request.user, pk)
    form = VisibilityForm(request.POST)
    if form.is_valid():
        set_visibility(image=image, visibility=form.cleaned_data["visibility"])
        messages.success(request, f"The image is now {image.visibility}.")
    return redirect("captions:image", pk=pk)


@login_required
@require_POST
def image_location(request: HttpRequest, pk: int) -> HttpResponse:
    image = selectors.get_own_image(request.user, pk)
    form = LocationForm(request.POST)
    if form.is_valid():
        set_share_location(image=image, share=form.cleaned_data["share_location"])
        shared = "is shared" if image.share_location else "is kept to you"
        messages.success(request, f"Where the photo was taken {shared}.")
    return redirect("captions:image", pk=pk)


@login_required
def image_delete(request: HttpRequest, pk: int) -> HttpResponse:
    image = selectors.get_own_image(request.user, pk)
    if request.method == "POST":
        delete_image(image=image)
        messages.success(request, "Image deleted.")
        return redirect("captions:gallery")
    return render(request, "captions/image_delete.html", {"image": image})


@throttle_page(SEARCH, methods=("GET",))
def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").replace("\x00", "").strip()  # Postgres refuses NUL in a query
    page = _page(request, selectors.search(request.user, query), per_page=20) if query else None
    context = {
        "query": query,
        "page": page,
        "suggestions": selectors.search_suggestions(request.user) if not page else [],
        "pager_extra": _pager_extra(request),
    }
    return render(request, "captions/search.html", context)


@login_required
def batch_list(request: HttpRequest) -> HttpResponse:
    page = _page(request, selectors.list_batches(request.user), per_page=50)
    return render(request, "captions/batch_list.html", {"page": page})


@login_required
def batch_page(request: HttpRequest, pk: int) -> HttpResponse:
    state = selectors.batch_status(selectors.get_batch(request.user, pk))
    total = sum(state.counts.values())
    finished = state.counts["done"] + state.counts["failed"]
    context = {
        "state": state,
        "rows": selectors.batch_items_with_captions(state),
        "total": total,
        "finished": finished,
        "percent": round(100 * finished / total) if total else 100,
    }
    return render(request, "captions/batch.html", context)


@login_required
@require_POST
def batch_rename(request: HttpRequest, pk: int) -> HttpResponse:
    batch = selectors.get_batch(request.user, pk)
    try:
        rename_batch(batch=batch, name=request.POST.get("name", ""))
        messages.success(request, f"Renamed to “{batch.title}”.")
    except RejectedInput as exc:
        messages.error(request, exc.message)
    return redirect("captions:batch", pk=pk)


@login_required
def batch_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: what deleting it means; POST: delete the batch, and its images when `with_images`."""
    state = selectors.batch_status(selectors.get_batch(request.user, pk))
    if request.method == "POST":
        try:
            deleted = delete_batch(batch=state.batch, with_images=request.POST.get("with_images") == "1")
        except RejectedInput as exc:
            messages.error(request, exc.message)
            return redirect("captions:batch", pk=pk)
        kept = "" if deleted else "; its photos are still in your library"
        gone = f" and its {deleted} photo{'s' if deleted != 1 else ''}" if deleted else ""
        messages.success(request, f"{state.batch.title}{gone} deleted{kept}.")
        return redirect("captions:batches")
    return render(request, "captions/batch_delete.html", {"state": state, "total": len(state.items)})


@login_required
def api_token(request: HttpRequest) -> HttpResponse:
    """The user's REST API token: shown, made or replaced (POST)."""
    if request.method == "POST":
        had = selectors.get_api_token(request.user) is not None
        regenerate_api_token(user=request.user)
        messages.success(request, "New token made; the old one no longer works." if had else "Token made.")
        return redirect("captions:token")
    token = selectors.get_api_token(request.user)
    return render(request, "captions/token.html", {"token": token, "site": request.build_absolute_uri("/")})


def api_guide(request: HttpRequest) -> HttpResponse:
    return render(request, "captions/api_guide.html", {"site": request.build_absolute_uri("/").rstrip("/")})
