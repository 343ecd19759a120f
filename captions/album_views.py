"""The album pages: your albums, one album (rename, share by link, remove images, delete), putting an
image in an album from its page, and the public read-only page of a shared album.

Forms post and redirect, as the rest of the site; writes go through captions.services.albums.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from captions import selectors
from captions.api.serializers import shared_album_url
from captions.ingest import RejectedInput
from captions.services import albums

PAGE_SIZE = 48


def _cards(request: HttpRequest, album, per_page: int = PAGE_SIZE):
    page = Paginator(selectors.album_images(album), per_page).get_page(request.GET.get("page"))
    active = selectors.active_model_version()
    return page, [(image, selectors.choose_captions(image, active).best) for image in page]


@login_required
def album_list(request: HttpRequest) -> HttpResponse:
    """GET: your albums; POST `name`: make one and open it."""
    if request.method == "POST":
        try:
            album = albums.create_album(owner=request.user, name=request.POST.get("name", ""))
        except RejectedInput as exc:
            messages.error(request, exc.message)
            return redirect("captions:albums")
        messages.success(
            request, f"Album “{album.name}” made. Add photos from the gallery or an image's page."
        )
        return redirect("captions:album", pk=album.pk)
    return render(request, "captions/album_list.html", {"albums": list(selectors.list_albums(request.user))})


@login_required
def album_page(request: HttpRequest, pk: int) -> HttpResponse:
    album = selectors.get_album(request.user, pk)
    page, cards = _cards(request, album)
    context = {
        "album": album,
        "page": page,
        "cards": cards,
        "share_url": shared_album_url(request, album),
        "pager_extra": "",
    }
    return render(request, "captions/album.html", context)


@login_required
@require_POST
def album_edit(request: HttpRequest, pk: int) -> HttpResponse:
    album = selectors.get_album(request.user, pk)
    try:
        albums.update_album(
            album=album,
            name=request.POST.get("name", album.name),
            description=request.POST.get("description"),
        )
        messages.success(request, "Album saved.")
    except RejectedInput as exc:
        messages.error(request, exc.message)
    return redirect("captions:album", pk=pk)


@login_required
@require_POST
def album_share(request: HttpRequest, pk: int) -> HttpResponse:
    """`action` share: turn the public link on; revoke: turn it off."""
    album = selectors.get_album(request.user, pk)
    if request.POST.get("action") == "revoke":
        albums.revoke_share(album=album)
        messages.success(request, "The link no longer works. Sharing again makes a new one.")
    else:
        albums.share_album(album=album)
        messages.success(request, "Anyone with the link can now see this album (read-only).")
    return redirect("captions:album", pk=pk)


@login_required
@require_POST
def album_remove_image(request: HttpRequest, pk: int, image_pk: int) -> HttpResponse:
    album = selectors.get_album(request.user, pk)
    albums.change_images(album=album, remove=[image_pk])
    messages.success(request, "Taken out of the album; it is still in your library.")
    return redirect("captions:album", pk=pk)


@login_required
def album_delete(request: HttpRequest, pk: int) -> HttpResponse:
    album = selectors.get_album(request.user, pk)
    if request.method == "POST":
        albums.delete_album(album=album)
        messages.success(request, f"Album “{album.name}” deleted; its photos are still in your library.")
        return redirect("captions:albums")
    return render(request, "captions/album_delete.html", {"album": album})


@login_required
@require_POST
def image_albums(request: HttpRequest, pk: int) -> HttpResponse:
    """From an image's page: put it in an album (`album`: an id, or `new_album`: a name to make one) or
    take it out of one (`remove`: an album id)."""
    image = selectors.get_own_image(request.user, pk)
    try:
        if request.POST.get("remove"):
            album = selectors.get_album(request.user, request.POST["remove"])
            albums.change_images(album=album, remove=[image.pk])
            messages.success(request, f"Taken out of “{album.name}”.")
        else:
            new_name = request.POST.get("new_album", "").strip()
            if new_name:
                album, _ = albums.get_or_create_album(owner=request.user, name=new_name)
            else:
                chosen = request.POST.get("album", "")
                if not chosen:
                    raise RejectedInput("unknown_album", "choose an album, or give a name for a new one")
                album = selectors.find_own_album(request.user, chosen)
            albums.change_images(album=album, add=[image.pk])
            messages.success(request, f"Added to “{album.name}”.")
    except RejectedInput as exc:
        messages.error(request, exc.message)
    return redirect("captions:image", pk=pk)


def shared_album(request: HttpRequest, token: str) -> HttpResponse:
    """An album its owner shared: read-only, for anyone with the link, signed in or not."""
    album = selectors.get_shared_album(token)
    page, cards = _cards(request, album)
    response = render(
        request,
        "captions/shared_album.html",
        {"album": album, "token": token, "page": page, "cards": cards, "pager_extra": ""},
    )
    response["X-Robots-Tag"] = "noindex"
    response["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    return response
