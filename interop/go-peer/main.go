// go-peer: a Fabric Data Session peer on Go's crypto/tls, written from docs/protocol.md,
// docs/identity.md and docs/sealing.md only.
//
//	go-peer dial -addr 127.0.0.1:PORT -peer-id afn1... [-bytes N]
//	go-peer accept -listen 127.0.0.1:0        (prints "listening ADDR NODE_ID")
//	go-peer vectors tests/vectors/auth.json   (checks the AUTH vector with Go's crypto)
//	go-peer sealed -addr RELAY -peer-id RELAY_ID -seed HEX -route-id N -lease HEX
//	        -dest-key HEX [-record HEX] [-suite 1|2] [-bytes N]
//	                                          (a sealed echo stream through a relay)
//	go-peer sealing-vectors tests/vectors/sealing.json  (checks them with flynn/noise)
//
// The standard library, plus, for sealing only, github.com/flynn/noise and
// golang.org/x/crypto (Debian golang-github-flynn-noise-dev, golang-golang-x-crypto-dev).
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-peer dial|accept|vectors ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "dial":
		err = dial(os.Args[2:])
	case "accept":
		err = accept(os.Args[2:])
	case "vectors":
		err = vectors(os.Args[2:])
	case "sealed":
		err = sealed(os.Args[2:])
	case "sealing-vectors":
		err = sealingVectors(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: go-peer dial|accept|vectors ...")
		os.Exit(2)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

func newKey() ed25519.PrivateKey {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return key
}

// binding is the RFC 9266 tls-exporter value of this connection.
func binding(conn *tls.Conn) ([]byte, error) {
	state := conn.ConnectionState()
	if state.Version != tls.VersionTLS13 {
		return nil, errors.New("not TLS 1.3")
	}
	return state.ExportKeyingMaterial(exporterLabel, nil, 32)
}

// connect dials a node over TCP+TLS 1.3 and runs the session handshake.
func connect(addr, peerID string, key ed25519.PrivateKey) (*Session, *tls.Conn, error) {
	cert, err := Certificate(key)
	if err != nil {
		return nil, nil, err
	}
	config := &tls.Config{
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // no CA: the certificate key is checked against AUTH
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, config)
	if err != nil {
		return nil, nil, err
	}
	cb, err := binding(conn)
	if err != nil {
		return nil, nil, err
	}
	s := NewSession(conn, true, key, cb)
	s.expectedPeer = peerID
	if certs := conn.ConnectionState().PeerCertificates; len(certs) > 0 {
		s.peerCertKey = certificateKey(certs[0].Raw)
	}
	go s.Run()
	if err := s.WaitReady(10 * time.Second); err != nil {
		return nil, nil, err
	}
	return s, conn, nil
}

// sealed opens a sealed echo stream on a route through the node at -addr (a relay):
// version 4 sealing (Noise IK), records both ways, the sealed end checked. Half the
// payload is sent before the destination's reply (early key), the rest after it (the
// key-change record, then Split()'s initiator key).
func sealed(args []string) error {
	flags := flag.NewFlagSet("sealed", flag.ExitOnError)
	addr := flags.String("addr", "", "host:port of the first relay's TCP+TLS listener")
	peerID := flags.String("peer-id", "", "the relay's node id")
	seedHex := flags.String("seed", "", "this node's Ed25519 seed (hex)")
	routeID := flags.Uint64("route-id", 0, "the route lease's route id")
	leaseHex := flags.String("lease", "", "the signed route lease (hex)")
	destHex := flags.String("dest-key", "", "the destination's sealing public key (hex)")
	recordHex := flags.String("record", "", "this node's signed node record (hex), optional")
	service := flags.String("service", "echo", "the service")
	suite := flags.Int("suite", 1, "cipher suite: 1 ChaCha20-Poly1305, 2 AES-256-GCM")
	total := flags.Int("bytes", 1<<20, "bytes to echo")
	text := flags.String("text", "", "echo this text repeated to -bytes (default: random bytes)")
	flags.Parse(args)
	seed, _ := hex.DecodeString(*seedHex)
	lease, _ := hex.DecodeString(*leaseHex)
	dest, _ := hex.DecodeString(*destHex)
	record, _ := hex.DecodeString(*recordHex)
	if len(seed) != 32 || len(dest) != 32 || len(lease) == 0 {
		return errors.New("-seed, -dest-key and -lease are required")
	}
	key := ed25519.NewKeyFromSeed(seed)
	nodeID := NodeID(key.Public().(ed25519.PublicKey))
	s, conn, err := connect(*addr, *peerID, key)
	if err != nil {
		return err
	}
	token := make([]byte, 16)
	rand.Read(token)
	opener, err := NewSealedOpener(SealingPrivateKey(seed), nodeID, dest, *service, token, byte(*suite), record)
	if err != nil {
		return err
	}
	fmt.Printf("key exchange: version %d suite %d, %d bytes\n", opener.KeyExchange[0], opener.KeyExchange[1], len(opener.KeyExchange))
	payload := make([]byte, *total)
	rand.Read(payload)
	if *text != "" {
		payload = bytes.Repeat([]byte(*text), *total/len(*text)+1)[:*total]
	}
	st := s.OpenRouted(*service, 2, *routeID, token, opener.KeyExchange, lease)
	writeErr := make(chan error, 1)
	go func() {
		half := len(payload) / 2
		err := st.Write(opener.Seal(payload[:half], false))
		if err == nil {
			select {
			case <-opener.Replied:
			case <-time.After(30 * time.Second):
				err = errors.New("no sealed reply from the destination")
			}
		}
		if err == nil {
			err = st.Write(opener.Seal(payload[half:], false))
		}
		if err == nil {
			err = st.Write(opener.Seal(nil, true))
		}
		st.CloseWrite()
		writeErr <- err
	}()
	var got bytes.Buffer
	deadline := time.AfterFunc(30*time.Second, func() { conn.Close() })
	defer deadline.Stop()
	for {
		chunk, err := st.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("sealed echo: %w", err)
		}
		plain, err := opener.Open(chunk)
		if err != nil {
			return fmt.Errorf("sealed echo: %w", err)
		}
		got.Write(plain)
	}
	if err := <-writeErr; err != nil {
		return err
	}
	if !opener.Finished {
		return errors.New("sealed echo: the stream ended without its sealed final record")
	}
	if !bytes.Equal(got.Bytes(), payload) {
		return fmt.Errorf("sealed echo returned %d bytes, not the %d sent", got.Len(), len(payload))
	}
	fmt.Printf("sealed echo: %d bytes\n", got.Len())
	s.Goaway()
	s.Wait(10 * time.Second)
	fmt.Println("ok")
	return nil
}

func dial(args []string) error {
	flags := flag.NewFlagSet("dial", flag.ExitOnError)
	addr := flags.String("addr", "", "host:port of a node's TCP+TLS listener")
	peerID := flags.String("peer-id", "", "the node id expected there")
	total := flags.Int("bytes", 3<<20, "bytes to echo")
	flags.Parse(args)
	key := newKey()
	cert, err := Certificate(key)
	if err != nil {
		return err
	}
	config := &tls.Config{
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // no CA: the certificate key is checked against AUTH
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", *addr, config)
	if err != nil {
		return err
	}
	cb, err := binding(conn)
	if err != nil {
		return err
	}
	s := NewSession(conn, true, key, cb)
	s.expectedPeer = *peerID
	if certs := conn.ConnectionState().PeerCertificates; len(certs) > 0 {
		s.peerCertKey = certificateKey(certs[0].Raw)
	}
	go s.Run()
	if err := s.WaitReady(10 * time.Second); err != nil {
		return err
	}
	fmt.Printf("session up: peer %s version %d\n", s.PeerID, s.Version)
	for i := 1; i <= 2; i++ {
		rtt, err := s.Ping(5 * time.Second)
		if err != nil {
			return fmt.Errorf("ping %d: %w", i, err)
		}
		fmt.Printf("ping %d: rtt %v\n", i, rtt)
	}
	payload := make([]byte, *total)
	rand.Read(payload)
	st := s.Open("echo", 2)
	writeErr := make(chan error, 1)
	go func() {
		err := st.Write(payload)
		st.CloseWrite()
		writeErr <- err
	}()
	var got bytes.Buffer
	deadline := time.AfterFunc(30*time.Second, func() { conn.Close() })
	defer deadline.Stop()
	for {
		chunk, err := st.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		got.Write(chunk)
	}
	if err := <-writeErr; err != nil {
		return err
	}
	if !bytes.Equal(got.Bytes(), payload) {
		return fmt.Errorf("echo returned %d bytes, not the %d sent", got.Len(), len(payload))
	}
	fmt.Printf("echo: %d bytes\n", got.Len())
	s.Goaway()
	if err := s.Wait(10 * time.Second); err != nil {
		return err
	}
	if s.Err != nil {
		return fmt.Errorf("after GOAWAY: %w", s.Err)
	}
	fmt.Println("goaway: drained, carrier closed")
	fmt.Println("ok")
	return nil
}

func accept(args []string) error {
	flags := flag.NewFlagSet("accept", flag.ExitOnError)
	listen := flags.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	breaks := flags.String("break", "", "deliberate bugs, comma separated: stream-credit (no "+
		"stream credit check), service-code (REFUSED_STREAM for an unknown service)")
	flags.Parse(args)
	bugs := map[string]bool{}
	for _, name := range strings.Split(*breaks, ",") {
		if name != "" {
			bugs[name] = true
		}
	}
	key := newKey()
	cert, err := Certificate(key)
	if err != nil {
		return err
	}
	config := &tls.Config{
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true,
	}
	listener, err := tls.Listen("tcp", *listen, config)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s %s\n", listener.Addr(), NodeID(key.Public().(ed25519.PublicKey)))
	for {
		raw, err := listener.Accept()
		if err != nil {
			return err
		}
		go serve(raw.(*tls.Conn), key, bugs)
	}
}

func serve(conn *tls.Conn, key ed25519.PrivateKey, bugs map[string]bool) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		conn.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	cb, err := binding(conn)
	if err != nil {
		conn.Close()
		return
	}
	s := NewSession(conn, false, key, cb)
	s.onOpen = echo
	s.bugs = bugs
	s.logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	s.Run()
	fmt.Fprintf(os.Stderr, "session with %s ended: %v\n", s.PeerID, s.Err)
}

// echo sends back what it reads, then ends its side.
func echo(st *Stream) {
	for {
		chunk, err := st.Read()
		if err != nil {
			break
		}
		if st.Write(chunk) != nil {
			return
		}
	}
	st.CloseWrite()
}

// ---------------------------------------------------------------- vectors

type vectorSide struct {
	Seed, PublicKey, NodeID, HelloFrame, SignedMessage, Signature, AuthFrame string
}

func vectors(args []string) error {
	raw, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var v struct {
		CipherSuite    string `json:"cipher_suite"`
		ExporterSecret string `json:"exporter_secret"`
		ExporterLabel  string `json:"exporter_label"`
		TLSExporter    string `json:"tls_exporter"`
		Transcript     string `json:"transcript"`
		Dialer         map[string]string
		Acceptor       map[string]string
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	unhex := func(s string) []byte { b, _ := hex.DecodeString(s); return b }
	newHash, size := func() hash.Hash { return sha256.New() }, 32
	if v.CipherSuite == "TLS_AES_256_GCM_SHA384" {
		newHash, size = sha512.New384, 48
	}
	empty := newHash().Sum(nil)
	derived := hkdfExpandLabel(newHash, unhex(v.ExporterSecret), v.ExporterLabel, empty, size)
	exporter := hkdfExpandLabel(newHash, derived, "exporter", empty, 32)
	if hex.EncodeToString(exporter) != v.TLSExporter {
		return fmt.Errorf("tls_exporter: got %x", exporter)
	}
	transcript := Transcript(unhex(v.Dialer["hello_frame"]), unhex(v.Acceptor["hello_frame"]), exporter)
	if hex.EncodeToString(transcript) != v.Transcript {
		return fmt.Errorf("transcript: got %x", transcript)
	}
	for i, side := range []map[string]string{v.Dialer, v.Acceptor} {
		key := ed25519.NewKeyFromSeed(unhex(side["seed"]))
		pub := key.Public().(ed25519.PublicKey)
		if NodeID(pub) != side["node_id"] {
			return fmt.Errorf("node id: got %s", NodeID(pub))
		}
		message := SignedMessage(transcript, i == 0)
		if hex.EncodeToString(message) != side["signed_message"] {
			return errors.New("signed message differs")
		}
		signature := ed25519.Sign(key, message)
		if hex.EncodeToString(encAuth(signature)) != side["auth_frame"] {
			return errors.New("AUTH frame differs")
		}
		frames, werr := NewDecoder().Feed(unhex(side["hello_frame"]))
		if werr != nil || len(frames) != 1 || frames[0].NodeID != side["node_id"] {
			return fmt.Errorf("HELLO frame does not decode: %v", werr)
		}
	}
	fmt.Println("ok")
	return nil
}
