# One image for the web replicas and the worker; docker-compose.yml gives each its command.
#
# Plain Dockerfile syntax on purpose: no `# syntax=` line (it would pull a frontend image) and no
# `RUN --mount` (compose v1 builds with Docker's legacy builder). The base image is a build argument
# so that CI machines without registry access can build FROM a local stand-in.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Exactly the locked versions, and nothing the lock does not name (--no-deps): no dev tools.
# All of them ship manylinux wheels, so no compiler is needed.
COPY requirements/app.lock /tmp/app.lock
RUN pip install --no-deps --only-binary=:all: -r /tmp/app.lock \
    && rm /tmp/app.lock

# The code stays owned by root: the service user can read it, not change it. Its home is writable
# for what gunicorn keeps there (its control socket).
WORKDIR /app
COPY . /app/
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app \
    && python -m compileall -q /app
USER 10001:10001

EXPOSE 5000
# docker-compose.yml overrides this for the worker (`python -m worker`).
CMD ["python", "-m", "gunicorn", "-c", "web/gunicorn.conf.py", "web.wsgi:app"]
