FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files for the admin; the key is only needed to load settings at build time.
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --no-input -v 0 \
    && useradd --system --uid 1000 app \
    && mkdir -p /tmp/prometheus && chown app /tmp/prometheus
USER app

# The API, and the metrics of the fan-out worker and of the relay.
EXPOSE 8000 8001 9101 9102 9103
CMD ["python", "-m", "gunicorn", "-c", "feedsite/gunicorn.conf.py"]
