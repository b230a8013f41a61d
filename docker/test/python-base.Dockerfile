# A stand-in for python:3.11-slim where Docker Hub cannot be reached: Debian bookworm's Python 3.11 in a venv on
# PATH (so `python` and `pip` behave as in the official image), over a base imported from debootstrap.
# Built by docker/test/images.sh; never published.
ARG ROOTFS_IMAGE=nvrag-test/debian-bookworm:minbase
FROM ${ROOTFS_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
# Debian's own python3 for bookworm, whatever its patch release
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:$PATH
CMD ["python3"]
