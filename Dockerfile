# Meta-Builder: one image for the API and the workers (the command picks the process).
#   docker build -t meta-builder .
#   docker run --rm meta-builder --version
# Workers run plan commands and LLM-written patches: the image runs as an unprivileged user.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir "build==1.2.2.post1" && python -m build --wheel --outdir /dist .

FROM python:3.11-slim-bookworm
# git: every step runs in a git checkout; tini: signals reach the process, zombies are reaped.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin metabuilder
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir "$(ls /tmp/dist/*.whl)[postgres]" && rm -rf /tmp/dist
USER 10001:10001
WORKDIR /home/metabuilder
ENV META_BUILDER_ENV=production \
    META_BUILDER_HOME=/home/metabuilder/data \
    META_BUILDER_API_HOST=0.0.0.0 \
    META_BUILDER_METRICS_HOST=0.0.0.0
EXPOSE 5001 9108 9109
ENTRYPOINT ["tini", "--", "metabuilder"]
CMD ["--help"]
