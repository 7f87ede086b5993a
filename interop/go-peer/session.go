// The session of docs/protocol.md "Session semantics": handshake, streams with credit,
// ACK, PING, GOAWAY. One reader goroutine; writers take wmu.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	stHello = iota
	stAuth
	stReady
	stStreaming
	stClosed
)

// Session is one fabric session over one TLS connection.
type Session struct {
	conn         net.Conn
	dialer       bool
	key          ed25519.PrivateKey
	expectedPeer string
	binding      []byte
	peerCertKey  []byte // the dialer checks it against the AUTH key
	ours         SessionReady
	onOpen       func(*Stream)
	bugs         map[string]bool // deliberate violations (-break), to test the runner
	logf         func(string, ...any)

	wmu sync.Mutex
	mu  sync.Mutex
	cnd *sync.Cond

	dec        *Decoder
	state      int
	localHello []byte
	peerHello  []byte
	peerPub    []byte
	PeerID     string
	transcript []byte
	Version    uint16
	Peer       SessionReady

	sessSendLimit, sessSent                       uint64
	sessRecvLimit, sessRecvReceived, sessConsumed uint64

	streams     map[uint32]*Stream
	highestPeer uint32
	nextLocal   uint32
	pongs       map[uint64]chan struct{}
	goawaySent  bool
	goawayRecv  bool
	closed      bool
	Err         error // why the session ended (nil: drained after GOAWAY NO_ERROR)
	ready       chan struct{}
	done        chan struct{}
}

// Stream is one fabric stream.
type Stream struct {
	s       *Session
	ID      uint32
	Service string
	local   bool

	sendLimit, sendOffset, acked uint64
	sendEnded                    bool
	recvLimit, recvOffset        uint64
	recvConsumed                 uint64
	recvEnded, reset             bool
	resetCode                    uint32
	inbox                        [][]byte
	window                       uint64
}

func NewSession(conn net.Conn, dialer bool, key ed25519.PrivateKey, binding []byte) *Session {
	s := &Session{
		conn: conn, dialer: dialer, key: key, binding: binding,
		ours: SessionReady{
			Version: protocolVersion, MaxFrameSize: 65536, InitialStreamWindow: 256 << 10,
			InitialSessionWindow: 1 << 20, MaxConcurrentStreams: 100,
		},
		dec: NewDecoder(), streams: map[uint32]*Stream{}, pongs: map[uint64]chan struct{}{},
		ready: make(chan struct{}), done: make(chan struct{}),
		logf: func(string, ...any) {},
	}
	s.cnd = sync.NewCond(&s.mu)
	if dialer {
		s.nextLocal = 1
	} else {
		s.nextLocal = 2
	}
	return s
}

func (s *Session) send(frames ...[]byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, f := range frames {
		if _, err := s.conn.Write(f); err != nil {
			return
		}
	}
}

// Run sends HELLO and reads until the session ends; it closes the connection.
func (s *Session) Run() {
	defer close(s.done)
	nonce := make([]byte, 32)
	rand.Read(nonce)
	pub := s.key.Public().(ed25519.PublicKey)
	s.localHello = encHello([]uint16{protocolVersion}, pub, nonce, NodeID(pub))
	s.send(s.localHello)
	buf := make([]byte, 256<<10)
	for {
		n, err := s.conn.Read(buf)
		if n > 0 {
			frames, werr := s.dec.Feed(buf[:n])
			s.mu.Lock()
			if s.handleBatch(frames) && werr != nil {
				s.failLocked(werr)
			}
			finished := s.closed
			s.mu.Unlock()
			if finished {
				break
			}
		}
		if err != nil {
			s.mu.Lock()
			if !s.closed {
				s.closed = true
				if !s.goawayRecv && !s.goawaySent || !errors.Is(err, io.EOF) {
					s.Err = fmt.Errorf("carrier closed: %w", err)
				}
			}
			s.cnd.Broadcast()
			s.mu.Unlock()
			break
		}
	}
	s.conn.Close()
}

// handleBatch applies frames; false when the session ended on one of them.
func (s *Session) handleBatch(frames []Frame) bool {
	touched := map[*Stream]bool{}
	for i := range frames {
		if s.closed {
			return false
		}
		if err := s.handle(&frames[i], touched); err != nil {
			s.failLocked(err)
			return false
		}
	}
	var acks [][]byte
	for st := range touched {
		if !st.reset {
			acks = append(acks, encAck(st.ID, st.recvOffset, uint32(st.recvLimit-st.recvOffset)))
		}
	}
	if len(acks) > 0 {
		s.send(acks...)
	}
	s.checkDrainedLocked()
	s.cnd.Broadcast()
	return !s.closed
}

func (s *Session) failLocked(err *WireError) {
	if s.closed {
		return
	}
	s.logf("session error: %v", err)
	s.send(encGoaway(s.highestPeer, err.Code, err.Reason))
	s.closed = true
	s.Err = err
	s.cnd.Broadcast()
	s.conn.Close()
}

func (s *Session) handle(f *Frame, touched map[*Stream]bool) *WireError {
	if f.Unknown {
		return nil
	}
	if f.Type == tGoaway {
		return s.onGoaway(f)
	}
	if s.state < stStreaming {
		want := map[int]byte{stHello: tHello, stAuth: tAuth, stReady: tSessionReady}[s.state]
		if f.Type != want {
			return werr(ProtocolError, "frame type 0x%02x before the handshake finished", f.Type)
		}
		switch f.Type {
		case tHello:
			return s.onHello(f)
		case tAuth:
			return s.onAuth(f)
		default:
			return s.onReady(f)
		}
	}
	switch f.Type {
	case tHello, tAuth, tSessionReady:
		return werr(ProtocolError, "handshake frame after the handshake")
	case tPing:
		s.send(encPong(f.Opaque))
	case tPong:
		if ch, ok := s.pongs[f.Opaque]; ok {
			close(ch)
			delete(s.pongs, f.Opaque)
		}
	case tOpenStream:
		return s.onOpenStream(f)
	case tData:
		return s.onData(f, touched)
	case tAck:
		st, err := s.peerStream(f.StreamID)
		if err != nil || st == nil {
			return err
		}
		if f.Offset > st.sendOffset {
			s.resetLocked(st, ProtocolError)
		} else if f.Offset > st.acked {
			st.acked = f.Offset
		}
	case tStreamCredit:
		if f.StreamID == 0 {
			if f.Offset > s.sessSendLimit {
				s.sessSendLimit = f.Offset
			}
			return nil
		}
		st, err := s.peerStream(f.StreamID)
		if err != nil || st == nil {
			return err
		}
		if f.Offset > st.sendLimit {
			st.sendLimit = f.Offset
		}
	case tCloseStream:
		st, err := s.peerStream(f.StreamID)
		if err != nil || st == nil || st.reset {
			return err
		}
		if f.Offset != st.recvOffset {
			s.resetLocked(st, ProtocolError)
		} else {
			s.endReceived(st)
		}
	case tResetStream:
		st, err := s.peerStream(f.StreamID)
		if err != nil || st == nil || st.reset {
			return err
		}
		st.reset, st.resetCode = true, f.Code
		s.releaseLocked(st)
		s.forget(st)
	}
	return nil
}

func (s *Session) onHello(f *Frame) *WireError {
	version := uint16(0)
	for _, v := range f.Versions {
		if v == protocolVersion && v > version {
			version = v
		}
	}
	if version == 0 {
		return werr(UnsupportedVersion, "peer speaks versions %v, we speak [%d]", f.Versions, protocolVersion)
	}
	s.Version = version
	s.peerHello = frame(f.Type, f.Flags, 0, f.Payload)
	s.peerPub, s.PeerID = f.PublicKey, f.NodeID
	if s.dialer {
		s.transcript = Transcript(s.localHello, s.peerHello, s.binding)
	} else {
		s.transcript = Transcript(s.peerHello, s.localHello, s.binding)
	}
	s.send(encAuth(ed25519.Sign(s.key, SignedMessage(s.transcript, s.dialer))))
	s.state = stAuth
	return nil
}

func (s *Session) onAuth(f *Frame) *WireError {
	if !ValidNodeIDFor(s.PeerID, s.peerPub) {
		return werr(AuthenticationFailed, "node id %q does not derive from the HELLO key", s.PeerID)
	}
	if len(f.Signature) != ed25519.SignatureSize ||
		!ed25519.Verify(s.peerPub, SignedMessage(s.transcript, !s.dialer), f.Signature) {
		return werr(AuthenticationFailed, "AUTH signature does not verify")
	}
	if s.expectedPeer != "" && NodeID(s.peerPub) != s.expectedPeer {
		return werr(IdentityMismatch, "expected %s, %s authenticated", s.expectedPeer, NodeID(s.peerPub))
	}
	if s.dialer && (s.peerCertKey == nil || string(s.peerCertKey) != string(s.peerPub)) {
		return werr(IdentityMismatch, "TLS certificate key differs from the AUTH key")
	}
	s.send(encReady(s.ours))
	if s.ours.MaxFrameSize > defaultMaxFrameSize {
		s.dec.maxFrameSize = s.ours.MaxFrameSize
	}
	s.state = stReady
	return nil
}

func (s *Session) onReady(f *Frame) *WireError {
	if f.Ready.Version != s.Version {
		return werr(UnsupportedVersion, "peer confirmed version %d, negotiated %d", f.Ready.Version, s.Version)
	}
	s.Peer = f.Ready
	s.sessSendLimit = uint64(f.Ready.InitialSessionWindow)
	s.sessRecvLimit = uint64(s.ours.InitialSessionWindow)
	s.state = stStreaming
	close(s.ready)
	return nil
}

func (s *Session) onGoaway(f *Frame) *WireError {
	s.goawayRecv = true
	if f.Code != NoError || s.state < stStreaming {
		s.closed = true
		s.Err = fmt.Errorf("peer GOAWAY code %d: %s", f.Code, f.Reason)
		s.conn.Close()
		return nil
	}
	for _, st := range s.streams {
		if st.local && st.ID > f.LastStream && !st.reset {
			st.reset, st.resetCode = true, RefusedStream
			s.forget(st)
		}
	}
	return nil
}

// peerStream: the stream a frame names, nil when it is gone, an error when never opened.
func (s *Session) peerStream(id uint32) (*Stream, *WireError) {
	if st, ok := s.streams[id]; ok {
		return st, nil
	}
	peerParity := uint32(1)
	if s.dialer {
		peerParity = 0
	}
	if id%2 == peerParity && id > s.highestPeer || id%2 != peerParity && id >= s.nextLocal {
		return nil, werr(InvalidStreamID, "frame on stream %d, which was never opened", id)
	}
	return nil, nil
}

func (s *Session) onOpenStream(f *Frame) *WireError {
	peerParity := uint32(1)
	if s.dialer {
		peerParity = 0
	}
	if f.StreamID%2 != peerParity || f.StreamID <= s.highestPeer {
		return werr(InvalidStreamID, "bad OPEN_STREAM id %d", f.StreamID)
	}
	s.highestPeer = f.StreamID
	active := 0
	for _, st := range s.streams {
		if !st.local && !st.reset {
			active++
		}
	}
	refuse := uint32(0)
	switch {
	case s.goawaySent || active >= int(s.ours.MaxConcurrentStreams):
		refuse = RefusedStream
	case f.Flags&fResume != 0 || len(f.KeyExchange) > 0 || len(f.RouteLease) > 0:
		refuse = RefusedStream // this peer serves direct, unsealed, fresh streams only
	case s.onOpen == nil || f.Service != "echo":
		refuse = ServiceUnavailable
		if s.bugs["service-code"] {
			refuse = RefusedStream
		}
	}
	if refuse != 0 {
		s.send(encReset(f.StreamID, refuse))
		return nil
	}
	st := s.newStream(f.StreamID, f.Service, false)
	go s.onOpen(st)
	return nil
}

func (s *Session) newStream(id uint32, service string, local bool) *Stream {
	st := &Stream{
		s: s, ID: id, Service: service, local: local,
		sendLimit: uint64(s.Peer.InitialStreamWindow),
		recvLimit: uint64(s.ours.InitialStreamWindow),
		window:    uint64(s.ours.InitialStreamWindow),
	}
	s.streams[id] = st
	return st
}

func (s *Session) onData(f *Frame, touched map[*Stream]bool) *WireError {
	size := uint64(len(f.Data))
	s.sessRecvReceived += size
	if s.sessRecvReceived > s.sessRecvLimit {
		return werr(FlowControlError, "DATA beyond the session credit %d", s.sessRecvLimit)
	}
	st, err := s.peerStream(f.StreamID)
	if err != nil {
		return err
	}
	if st == nil || st.reset {
		s.sessConsumed += size // bytes no application will read free session credit at once
		return nil
	}
	end := f.Offset + size
	switch {
	case f.Offset > st.recvOffset:
		s.sessConsumed += size
		s.resetLocked(st, ProtocolError)
		return nil
	case st.recvEnded:
		s.sessConsumed += size
		s.resetLocked(st, StreamClosed)
		return nil
	case end > st.recvLimit && !s.bugs["stream-credit"]:
		s.sessConsumed += size
		s.resetLocked(st, FlowControlError)
		return nil
	}
	fresh := f.Data
	if f.Offset < st.recvOffset {
		skip := st.recvOffset - f.Offset
		if skip > size {
			skip = size
		}
		s.sessConsumed += skip
		fresh = fresh[skip:]
	}
	if len(fresh) > 0 {
		st.inbox = append(st.inbox, append([]byte(nil), fresh...))
		st.recvOffset += uint64(len(fresh))
		touched[st] = true
	}
	if f.Flags&fEndStream != 0 {
		s.endReceived(st)
		touched[st] = true
	}
	return nil
}

func (s *Session) endReceived(st *Stream) {
	if st.recvEnded {
		s.resetLocked(st, StreamClosed)
		return
	}
	st.recvEnded = true
	s.forget(st)
}

func (s *Session) resetLocked(st *Stream, code uint32) {
	if st.reset {
		return
	}
	st.reset, st.resetCode = true, code
	s.releaseLocked(st)
	s.send(encReset(st.ID, code))
	s.forget(st)
}

// releaseLocked frees the session credit of bytes a reset stream will never deliver.
func (s *Session) releaseLocked(st *Stream) {
	for _, chunk := range st.inbox {
		s.sessConsumed += uint64(len(chunk))
	}
	st.inbox = nil
	s.grantLocked(nil)
}

func (s *Session) forget(st *Stream) {
	if st.reset || st.recvEnded && st.sendEnded {
		delete(s.streams, st.ID)
	}
}

func (s *Session) checkDrainedLocked() {
	if (s.goawaySent || s.goawayRecv) && len(s.streams) == 0 && s.state == stStreaming && !s.closed {
		s.closed = true
		s.conn.Close()
	}
}

// grantLocked sends STREAM_CREDIT when less than half a window is left (stream, session).
func (s *Session) grantLocked(st *Stream) {
	var out [][]byte
	if st != nil && !st.reset && !st.recvEnded && st.recvLimit-st.recvConsumed < st.window/2 {
		st.recvLimit = st.recvConsumed + st.window
		out = append(out, encCredit(st.ID, st.recvLimit))
	}
	window := uint64(s.ours.InitialSessionWindow)
	if s.state == stStreaming && s.sessRecvLimit-s.sessConsumed < window/2 {
		s.sessRecvLimit = s.sessConsumed + window
		out = append(out, encCredit(0, s.sessRecvLimit))
	}
	if len(out) > 0 {
		s.send(out...)
	}
}

// ---------------------------------------------------------------- user API

func (s *Session) WaitReady(timeout time.Duration) error {
	select {
	case <-s.ready:
		return nil
	case <-s.done:
		return fmt.Errorf("session ended during the handshake: %v", s.Err)
	case <-time.After(timeout):
		return errors.New("handshake timed out")
	}
}

func (s *Session) Ping(timeout time.Duration) (time.Duration, error) {
	var b [8]byte
	rand.Read(b[:])
	opaque := binary.BigEndian.Uint64(b[:])
	ch := make(chan struct{})
	s.mu.Lock()
	s.pongs[opaque] = ch
	s.mu.Unlock()
	start := time.Now()
	s.send(encPing(opaque))
	select {
	case <-ch:
		return time.Since(start), nil
	case <-s.done:
		return 0, fmt.Errorf("session ended: %v", s.Err)
	case <-time.After(timeout):
		return 0, errors.New("no PONG")
	}
}

func (s *Session) Open(service string, class byte) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.newStream(s.nextLocal, service, true)
	s.nextLocal += 2
	s.send(encOpen(st.ID, class, service))
	return st
}

// OpenRouted opens a stream on a route (through relays) with a sealing key exchange.
func (s *Session) OpenRouted(service string, class byte, routeID uint64, token, kx, lease []byte) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.newStream(s.nextLocal, service, true)
	s.nextLocal += 2
	s.send(encRoutedOpen(st.ID, class, service, routeID, token, kx, lease))
	return st
}

func (s *Session) Goaway() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goawaySent = true
	s.send(encGoaway(s.highestPeer, NoError, "go peer done"))
	s.checkDrainedLocked()
}

func (s *Session) Wait(timeout time.Duration) error {
	select {
	case <-s.done:
		return nil
	case <-time.After(timeout):
		return errors.New("session did not end")
	}
}

// Write sends data within the stream's and the session's credit.
func (st *Stream) Write(data []byte) error {
	s := st.s
	for len(data) > 0 {
		s.mu.Lock()
		for !s.closed && !st.reset && (st.sendLimit <= st.sendOffset || s.sessSendLimit <= s.sessSent) {
			s.cnd.Wait()
		}
		if s.closed || st.reset {
			s.mu.Unlock()
			return fmt.Errorf("stream %d: reset %d or session ended", st.ID, st.resetCode)
		}
		n := uint64(len(data))
		n = minU(n, st.sendLimit-st.sendOffset)
		n = minU(n, s.sessSendLimit-s.sessSent)
		n = minU(n, uint64(s.Peer.MaxFrameSize)-8)
		f := encData(st.ID, st.sendOffset, data[:n], false)
		st.sendOffset += n
		s.sessSent += n
		s.send(f) // under mu: frames of one stream leave in offset order
		s.mu.Unlock()
		data = data[n:]
	}
	return nil
}

// CloseWrite ends our side with an empty DATA carrying END_STREAM.
func (st *Stream) CloseWrite() {
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.sendEnded || st.reset {
		return
	}
	st.sendEnded = true
	s.send(encData(st.ID, st.sendOffset, nil, true))
	s.forget(st)
	s.checkDrainedLocked()
}

// Read returns the next received bytes; io.EOF after the peer's end.
func (st *Stream) Read() ([]byte, error) {
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(st.inbox) == 0 && !st.recvEnded && !st.reset && !s.closed {
		s.cnd.Wait()
	}
	if len(st.inbox) > 0 {
		chunk := st.inbox[0]
		st.inbox = st.inbox[1:]
		st.recvConsumed += uint64(len(chunk))
		s.sessConsumed += uint64(len(chunk))
		s.grantLocked(st)
		return chunk, nil
	}
	if st.reset {
		return nil, fmt.Errorf("stream %d reset with code %d", st.ID, st.resetCode)
	}
	if st.recvEnded {
		return nil, io.EOF
	}
	return nil, fmt.Errorf("session ended: %v", s.Err)
}

func minU(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

func certificateKey(der []byte) []byte {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil
	}
	if key, ok := cert.PublicKey.(ed25519.PublicKey); ok {
		return key
	}
	return nil
}
