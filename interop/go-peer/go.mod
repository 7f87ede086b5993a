// Built in GOPATH mode (GO111MODULE=off) over Debian's Go source packages in
// /usr/share/gocode (tests/interop/go_peer.py): github.com/flynn/noise and
// golang.org/x/crypto, for sealing only. Nothing is downloaded.
module accessfabric.example/gopeer

go 1.19
