# Sourced by env/speech.sh and env/synthetic.sh: Debian packages downloaded with apt-get (no root
# needed) and unpacked with dpkg -x into one folder.
# unpack_debs DEST PACKAGE...: 0 when DEST now holds the unpacked packages; 1 when the download
# failed (no package index, no network), DEST left as it was.
unpack_debs() {
  local dest=$1 tmp deb
  shift
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -q "$@" >/dev/null 2>&1); then
    rm -rf "$tmp"
    return 1
  fi
  mkdir -p "$tmp/root"
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/root"; done
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/root" "$dest"
  rm -rf "$tmp"
}
