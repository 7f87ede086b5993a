// Fabric Data Session frames, written from docs/protocol.md ("Frame header", "Frame
// types", "Validation order and errors"). Standard library only.
package main

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Frame types (docs/protocol.md, registry).
const (
	tData         = 0x00
	tOpenStream   = 0x01
	tAck          = 0x02
	tStreamCredit = 0x03
	tCloseStream  = 0x04
	tResetStream  = 0x05
	tPing         = 0x06
	tPong         = 0x07
	tRouteUpdate  = 0x08
	tNodePressure = 0x09
	tGoaway       = 0x0A
	tHello        = 0x10
	tAuth         = 0x11
	tSessionReady = 0x12
)

// Flags.
const (
	fEndStream = 0x01
	fResume    = 0x02
	fIgnorable = 0x80
)

// Error codes.
const (
	NoError              = 0x00
	ProtocolError        = 0x01
	InternalError        = 0x02
	FlowControlError     = 0x03
	Timeout              = 0x04
	StreamClosed         = 0x05
	FrameSizeError       = 0x06
	RefusedStream        = 0x07
	Cancel               = 0x08
	UnsupportedVersion   = 0x09
	AuthenticationFailed = 0x0A
	IdentityMismatch     = 0x0B
	EnhanceYourCalm      = 0x0C
	RouteRejected        = 0x0D
	ServiceUnavailable   = 0x0E
	FrameFormatError     = 0x0F
	UnknownFrameType     = 0x10
	InvalidStreamID      = 0x11
)

const (
	headerSize          = 9
	defaultMaxFrameSize = 65536
	minMaxFrameSize     = 16384
	maxFrameSizeCap     = 1<<24 - 1
)

// WireError is a violation with its code (a connection error when Stream is 0).
type WireError struct {
	Code   uint32
	Reason string
}

func (e *WireError) Error() string { return fmt.Sprintf("code %d: %s", e.Code, e.Reason) }

func werr(code uint32, format string, args ...any) *WireError {
	return &WireError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Frame is one decoded frame; Payload is the raw payload, the typed fields below are
// filled for the types that have them.
type Frame struct {
	Type     byte
	Flags    byte
	StreamID uint32
	Payload  []byte
	Unknown  bool // an unknown type with IGNORABLE: to be skipped

	Offset     uint64 // DATA, ACK (offset), CLOSE_STREAM (final offset), STREAM_CREDIT (max offset)
	Data       []byte // DATA
	Window     uint32 // ACK
	Code       uint32 // RESET_STREAM, GOAWAY
	Opaque     uint64 // PING, PONG
	LastStream uint32 // GOAWAY
	Reason     string // GOAWAY

	Class       byte // OPEN_STREAM
	RouteID     uint64
	StartOffset uint64
	Service     string
	ResumeToken []byte
	KeyExchange []byte
	RouteLease  []byte

	Versions   []uint16 // HELLO
	PublicKey  []byte
	Nonce      []byte
	NodeID     string
	Caps       []byte
	NodeRecord []byte

	Signature []byte // AUTH

	Ready SessionReady // SESSION_READY
}

// SessionReady carries the limits of SESSION_READY.
type SessionReady struct {
	Version              uint16
	MaxFrameSize         uint32
	InitialStreamWindow  uint32
	InitialSessionWindow uint32
	MaxConcurrentStreams uint32
	RouteEpoch           uint64
	PeerEpoch            uint64
}

var definedFlags = map[byte]byte{tData: fEndStream, tOpenStream: fResume}

// Which stream ids a type may use: 'n' non-zero, 'z' zero, 'a' any.
var streamRule = map[byte]byte{
	tData: 'n', tOpenStream: 'n', tAck: 'n', tStreamCredit: 'a', tCloseStream: 'n',
	tResetStream: 'n', tPing: 'z', tPong: 'z', tRouteUpdate: 'z', tNodePressure: 'z',
	tGoaway: 'z', tHello: 'z', tAuth: 'z', tSessionReady: 'z',
}

var fixedSize = map[byte]int{
	tAck: 12, tStreamCredit: 8, tCloseStream: 8, tResetStream: 4, tPing: 8, tPong: 8,
	tNodePressure: 4, tSessionReady: 34,
}

// Decoder splits a byte stream into frames, checking them in the documented order.
type Decoder struct {
	buf          []byte
	maxFrameSize uint32
	failed       *WireError
}

func NewDecoder() *Decoder { return &Decoder{maxFrameSize: defaultMaxFrameSize} }

// Feed adds bytes and returns every complete frame, or the first violation.
func (d *Decoder) Feed(data []byte) ([]Frame, *WireError) {
	if d.failed != nil {
		return nil, d.failed
	}
	d.buf = append(d.buf, data...)
	var frames []Frame
	for len(d.buf) >= headerSize {
		length := uint32(d.buf[0])<<16 | uint32(d.buf[1])<<8 | uint32(d.buf[2])
		if length > d.maxFrameSize {
			d.failed = werr(FrameSizeError, "frame of %d bytes exceeds max frame size %d", length, d.maxFrameSize)
			return frames, d.failed
		}
		if len(d.buf) < headerSize+int(length) {
			break
		}
		f, err := parseFrame(d.buf[:headerSize+int(length)])
		d.buf = d.buf[headerSize+int(length):]
		if err != nil {
			d.failed = err
			return frames, err
		}
		frames = append(frames, f)
	}
	if len(d.buf) == 0 {
		d.buf = nil
	}
	return frames, nil
}

func parseFrame(raw []byte) (Frame, *WireError) {
	f := Frame{Type: raw[3], Flags: raw[4]}
	sid := binary.BigEndian.Uint32(raw[5:9])
	if sid&0x80000000 != 0 {
		return f, werr(FrameFormatError, "reserved bit set")
	}
	f.StreamID = sid
	f.Payload = append([]byte(nil), raw[headerSize:]...)
	rule, known := streamRule[f.Type]
	if !known {
		if f.Flags&fIgnorable != 0 {
			f.Unknown = true
			return f, nil
		}
		return f, werr(UnknownFrameType, "unknown frame type 0x%02x", f.Type)
	}
	if f.Flags&^(definedFlags[f.Type]|fIgnorable) != 0 {
		return f, werr(FrameFormatError, "undefined flag on type 0x%02x", f.Type)
	}
	if (rule == 'n' && sid == 0) || (rule == 'z' && sid != 0) {
		return f, werr(InvalidStreamID, "stream id %d not allowed for type 0x%02x", sid, f.Type)
	}
	p := f.Payload
	if size, ok := fixedSize[f.Type]; ok && len(p) != size {
		return f, werr(FrameSizeError, "type 0x%02x needs %d payload bytes, got %d", f.Type, size, len(p))
	}
	switch f.Type {
	case tData:
		if len(p) < 8 {
			return f, werr(FrameSizeError, "DATA shorter than 8 bytes")
		}
		f.Offset = binary.BigEndian.Uint64(p)
		f.Data = p[8:]
	case tAck:
		f.Offset = binary.BigEndian.Uint64(p)
		f.Window = binary.BigEndian.Uint32(p[8:])
	case tStreamCredit, tCloseStream:
		f.Offset = binary.BigEndian.Uint64(p)
	case tResetStream:
		f.Code = binary.BigEndian.Uint32(p)
	case tPing, tPong:
		f.Opaque = binary.BigEndian.Uint64(p)
	case tRouteUpdate:
		if len(p) == 0 {
			return f, werr(FrameFormatError, "empty ROUTE_UPDATE")
		}
	case tNodePressure:
		for _, level := range p {
			if level > 100 {
				return f, werr(FrameFormatError, "pressure level above 100")
			}
		}
	case tGoaway:
		if len(p) < 8 {
			return f, werr(FrameFormatError, "GOAWAY shorter than 8 bytes")
		}
		last := binary.BigEndian.Uint32(p)
		if last&0x80000000 != 0 {
			return f, werr(FrameFormatError, "GOAWAY reserved bit set")
		}
		f.LastStream, f.Code = last, binary.BigEndian.Uint32(p[4:])
		if len(p)-8 > 1024 || !utf8.Valid(p[8:]) {
			return f, werr(FrameFormatError, "bad GOAWAY reason")
		}
		f.Reason = string(p[8:])
	case tOpenStream:
		return parseOpen(f)
	case tHello:
		return parseHello(f)
	case tAuth:
		if len(p) < 1 || len(p) > 1024 {
			return f, werr(FrameFormatError, "AUTH signature of %d bytes", len(p))
		}
		f.Signature = p
	case tSessionReady:
		r := &f.Ready
		r.Version = binary.BigEndian.Uint16(p)
		r.MaxFrameSize = binary.BigEndian.Uint32(p[2:])
		r.InitialStreamWindow = binary.BigEndian.Uint32(p[6:])
		r.InitialSessionWindow = binary.BigEndian.Uint32(p[10:])
		r.MaxConcurrentStreams = binary.BigEndian.Uint32(p[14:])
		r.RouteEpoch = binary.BigEndian.Uint64(p[18:])
		r.PeerEpoch = binary.BigEndian.Uint64(p[26:])
		if r.MaxFrameSize < minMaxFrameSize || r.MaxFrameSize > maxFrameSizeCap {
			return f, werr(FrameFormatError, "bad SESSION_READY")
		}
	}
	return f, nil
}

type reader struct {
	p   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || len(r.p) < n {
		r.bad = true
		return nil
	}
	out := r.p[:n]
	r.p = r.p[n:]
	return out
}
func (r *reader) u8() int {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}
func (r *reader) u16() int {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}
func (r *reader) u64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func parseOpen(f Frame) (Frame, *WireError) {
	r := &reader{p: f.Payload}
	f.Class = byte(r.u8())
	f.RouteID = r.u64()
	f.StartOffset = r.u64()
	svc := r.take(r.u8())
	f.ResumeToken = r.take(r.u8())
	f.KeyExchange = r.take(r.u16())
	f.RouteLease = r.take(r.u16())
	switch {
	case r.bad || len(r.p) != 0:
		return f, werr(FrameFormatError, "OPEN_STREAM truncated or trailing bytes")
	case f.Class > 5:
		return f, werr(FrameFormatError, "unknown traffic class %d", f.Class)
	case len(svc) == 0 || !utf8.Valid(svc):
		return f, werr(FrameFormatError, "bad service name")
	case len(f.ResumeToken) > 32 || len(f.KeyExchange) > 1024 || len(f.RouteLease) > 8192:
		return f, werr(FrameFormatError, "OPEN_STREAM bound exceeded")
	}
	f.Service = string(svc)
	return f, nil
}

func parseHello(f Frame) (Frame, *WireError) {
	r := &reader{p: f.Payload}
	count := r.u8()
	for i := 0; i < count; i++ {
		f.Versions = append(f.Versions, uint16(r.u16()))
	}
	f.PublicKey = r.take(32)
	f.Nonce = r.take(32)
	id := r.take(r.u8())
	f.Caps = r.take(r.u16())
	f.NodeRecord = r.take(r.u16())
	switch {
	case r.bad || len(r.p) != 0:
		return f, werr(FrameFormatError, "HELLO truncated or trailing bytes")
	case count < 1 || count > 16:
		return f, werr(FrameFormatError, "HELLO with %d versions", count)
	case len(id) < 1 || len(id) > 64 || !utf8.Valid(id):
		return f, werr(FrameFormatError, "bad HELLO node id")
	case len(f.Caps) > 4096 || len(f.NodeRecord) > 4096:
		return f, werr(FrameFormatError, "HELLO bound exceeded")
	}
	for _, v := range f.Versions {
		if v == 0 {
			return f, werr(FrameFormatError, "version 0 in HELLO")
		}
	}
	f.NodeID = string(id)
	return f, nil
}

// ---------------------------------------------------------------- encoding

func frame(typ, flags byte, sid uint32, payload []byte) []byte {
	out := make([]byte, headerSize, headerSize+len(payload))
	out[0], out[1], out[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	out[3], out[4] = typ, flags
	binary.BigEndian.PutUint32(out[5:], sid)
	return append(out, payload...)
}

func u64b(v uint64) []byte { b := make([]byte, 8); binary.BigEndian.PutUint64(b, v); return b }
func u32b(v uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, v); return b }
func u16b(v uint16) []byte { b := make([]byte, 2); binary.BigEndian.PutUint16(b, v); return b }

func encData(sid uint32, offset uint64, data []byte, end bool) []byte {
	var flags byte
	if end {
		flags = fEndStream
	}
	return frame(tData, flags, sid, append(u64b(offset), data...))
}
func encAck(sid uint32, offset uint64, window uint32) []byte {
	return frame(tAck, 0, sid, append(u64b(offset), u32b(window)...))
}
func encCredit(sid uint32, max uint64) []byte  { return frame(tStreamCredit, 0, sid, u64b(max)) }
func encClose(sid uint32, final uint64) []byte { return frame(tCloseStream, 0, sid, u64b(final)) }
func encReset(sid uint32, code uint32) []byte  { return frame(tResetStream, 0, sid, u32b(code)) }
func encPing(opaque uint64) []byte             { return frame(tPing, 0, 0, u64b(opaque)) }
func encPong(opaque uint64) []byte             { return frame(tPong, 0, 0, u64b(opaque)) }
func encGoaway(last, code uint32, reason string) []byte {
	return frame(tGoaway, 0, 0, append(append(u32b(last), u32b(code)...), reason...))
}
func encAuth(sig []byte) []byte { return frame(tAuth, 0, 0, sig) }

func encOpen(sid uint32, class byte, service string) []byte {
	// route id 0 (direct), no resume token, no key exchange (not sealed), no lease
	return encRoutedOpen(sid, class, service, 0, nil, nil, nil)
}

// encRoutedOpen is OPEN_STREAM on a route: its lease, a resume token and the sealing key
// exchange (start offset 0: a fresh stream).
func encRoutedOpen(sid uint32, class byte, service string, routeID uint64, token, kx, lease []byte) []byte {
	p := []byte{class}
	p = append(p, u64b(routeID)...)
	p = append(p, u64b(0)...) // start offset 0: a fresh stream
	p = append(p, byte(len(service)))
	p = append(p, service...)
	p = append(p, byte(len(token)))
	p = append(p, token...)
	p = append(p, u16b(uint16(len(kx)))...)
	p = append(p, kx...)
	p = append(p, u16b(uint16(len(lease)))...)
	p = append(p, lease...)
	return frame(tOpenStream, 0, sid, p)
}

func encHello(versions []uint16, pub, nonce []byte, nodeID string) []byte {
	p := []byte{byte(len(versions))}
	for _, v := range versions {
		p = append(p, u16b(v)...)
	}
	p = append(p, pub...)
	p = append(p, nonce...)
	p = append(p, byte(len(nodeID)))
	p = append(p, nodeID...)
	p = append(p, u16b(0)...) // capabilities
	p = append(p, u16b(0)...) // node record
	return frame(tHello, 0, 0, p)
}

func encReady(r SessionReady) []byte {
	p := u16b(r.Version)
	p = append(p, u32b(r.MaxFrameSize)...)
	p = append(p, u32b(r.InitialStreamWindow)...)
	p = append(p, u32b(r.InitialSessionWindow)...)
	p = append(p, u32b(r.MaxConcurrentStreams)...)
	p = append(p, u64b(r.RouteEpoch)...)
	p = append(p, u64b(r.PeerEpoch)...)
	return frame(tSessionReady, 0, 0, p)
}
