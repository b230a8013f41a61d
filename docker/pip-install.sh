#!/bin/sh
# pip inside an image build:
#   nvrag-pip-install torch SPEC        torch from TORCH_FIND_LINKS or else TORCH_INDEX_URL
#   nvrag-pip-install project SPEC...   anything else, from PyPI
#   nvrag-pip-install wheel ARGS...     pip wheel ARGS (a wheel built from source)
# With the build secret ca_bundle mounted, pip (and what it runs) trusts that CA for this one command; nothing
# about it is written into the image.
set -eu
if [ -f /run/secrets/ca_bundle ]; then
    export PIP_CERT=/run/secrets/ca_bundle REQUESTS_CA_BUNDLE=/run/secrets/ca_bundle SSL_CERT_FILE=/run/secrets/ca_bundle
fi
what="$1"
shift
case "$what" in
    torch)
        if [ -n "${TORCH_FIND_LINKS:-}" ]; then
            # the wheel from there (a local build sorts above PyPI's), what it needs from PyPI
            case "$TORCH_FIND_LINKS" in
                http://*)
                    host="${TORCH_FIND_LINKS#http://}"
                    set -- --trusted-host "${host%%[:/]*}" "$@"
                    ;;
            esac
            exec python -m pip install --find-links "$TORCH_FIND_LINKS" "$@"
        fi
        exec python -m pip install --index-url "${TORCH_INDEX_URL:?set TORCH_INDEX_URL or TORCH_FIND_LINKS}" "$@"
        ;;
    project)
        exec python -m pip install "$@"
        ;;
    wheel)
        exec python -m pip wheel "$@"
        ;;
    *)
        echo "nvrag-pip-install: unknown mode $what (torch, project or wheel)" >&2
        exit 2
        ;;
esac
