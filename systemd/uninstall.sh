#!/usr/bin/env bash
# Remove the wastesort service: same as 'install.sh --uninstall' (pass --purge, --root DIR as there).
exec "$(dirname "${BASH_SOURCE[0]}")/install.sh" --uninstall "$@"
