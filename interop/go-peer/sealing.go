package main

// End-to-end sealing, version 4, written from docs/sealing.md: exactly Noise IK
// (github.com/flynn/noise, Debian golang-github-flynn-noise-dev) for the handshake, the
// record layer on the Noise cipher of the stream's suite. The opener seals with the early
// key (message 1's payload) until it has message 2, then sends the key-change record and
// seals with Split()'s initiator key from nonce 0.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
)

const (
	sealingVersion     = 4
	maxRecordPlaintext = 64*1024 - 32
	finalBit           = uint32(1) << 31
	keyChangeBit       = uint32(1) << 30
	recordTag          = 16
	maxKeyExchange     = 1024
	exchangeRoom       = maxKeyExchange - 41 // room for a resume proof beside the exchange
	prologueLabel      = "accessfabric e2e sealing v4"
)

// SealingPrivateKey derives a node's X25519 sealing key from its Ed25519 seed
// (docs/identity.md, "Sealing key").
func SealingPrivateKey(seed []byte) []byte {
	key := make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, seed, nil, []byte("accessfabric x25519 sealing v1")), key); err != nil {
		panic(err)
	}
	return key
}

func x25519Public(private []byte) []byte {
	public, err := curve25519.X25519(private, curve25519.Basepoint)
	if err != nil {
		panic(err)
	}
	return public
}

func suiteCipher(suite byte) (noise.CipherFunc, error) {
	switch suite {
	case 1:
		return noise.CipherChaChaPoly, nil // Noise_IK_25519_ChaChaPoly_SHA256
	case 2:
		return noise.CipherAESGCM, nil // Noise_IK_25519_AESGCM_SHA256
	}
	return nil, fmt.Errorf("unknown cipher suite %d", suite)
}

// SealedOpener is the opener's side of a sealed stream.
type SealedOpener struct {
	KeyExchange []byte
	ResumeKey   []byte
	hs          *noise.HandshakeState
	cipher      noise.CipherFunc
	mu          sync.Mutex // Seal and Open may run in two goroutines
	send        noise.Cipher
	sendN       uint64
	nextSend    noise.Cipher // Split()'s initiator key, once message 2 is read
	sendDone    bool
	// Replied is closed once the reply (message 2) is read: Seal switches keys after it.
	Replied  chan struct{}
	recv     noise.Cipher
	recvN    uint64
	reply    []byte
	buf      []byte
	Finished bool
}

// NewSealedOpener builds the version 4 key exchange for a stream of service with
// token to the destination whose sealing key is destStatic.
func NewSealedOpener(staticPriv []byte, nodeID string, destStatic []byte, service string, token []byte, suite byte, record []byte) (*SealedOpener, error) {
	secrets := make([]byte, 64) // early key | resume key
	if _, err := rand.Read(secrets); err != nil {
		return nil, err
	}
	return newSealedOpener(staticPriv, nodeID, destStatic, service, token, suite, record,
		uint64(time.Now().UnixMilli()), nil, secrets)
}

// newSealedOpener with the time, the ephemeral key (nil: random) and message 1's
// payload given: tests/vectors/sealing.json fixes them.
func newSealedOpener(staticPriv []byte, nodeID string, destStatic []byte, service string, token []byte, suite byte, record []byte, openedMs uint64, ephemeral []byte, secrets []byte) (*SealedOpener, error) {
	cf, err := suiteCipher(suite)
	if err != nil {
		return nil, err
	}
	var random io.Reader = rand.Reader
	if ephemeral != nil { // flynn/noise draws e's private key from Random: 32 bytes
		random = bytes.NewReader(ephemeral)
	}
	head := append([]byte{sealingVersion, suite}, u64b(openedMs)...)
	prologue := append([]byte(prologueLabel), head...)
	prologue = append(prologue, byte(len(nodeID)))
	prologue = append(prologue, nodeID...)
	prologue = append(prologue, service...)
	prologue = append(prologue, 0)
	prologue = append(prologue, token...)
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noise.NewCipherSuite(noise.DH25519, cf, noise.HashSHA256),
		Random:        random,
		Pattern:       noise.HandshakeIK,
		Initiator:     true,
		Prologue:      prologue,
		StaticKeypair: noise.DHKey{Private: staticPriv, Public: x25519Public(staticPriv)},
		PeerStatic:    destStatic,
	})
	if err != nil {
		return nil, err
	}
	message, _, _, err := hs.WriteMessage(nil, secrets)
	if err != nil {
		return nil, err
	}
	if len(message) != 160 {
		return nil, fmt.Errorf("Noise message 1 is %d bytes, not 160", len(message))
	}
	kx := append(append([]byte{}, head...), message...)
	kx = append(kx, byte(len(nodeID)))
	kx = append(kx, nodeID...)
	if len(record) > 0 && len(kx)+2+len(record) <= exchangeRoom {
		kx = append(kx, u16b(uint16(len(record)))...)
		kx = append(kx, record...)
	}
	var early [32]byte
	copy(early[:], secrets[:32])
	return &SealedOpener{
		KeyExchange: kx, ResumeKey: secrets[32:], hs: hs, cipher: cf, send: cf.Cipher(early),
		Replied: make(chan struct{}),
	}, nil
}

// Seal cuts data into records (the last one final when final is set).
// The first Seal after the reply starts with the key-change record (empty, header
// 0x40000000, under the early key) and seals the rest under the initiator key from nonce 0.
func (o *SealedOpener) Seal(data []byte, final bool) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []byte
	if o.nextSend != nil {
		header := u32b(keyChangeBit)
		out = append(out, header...)
		out = o.send.Encrypt(out, o.sendN, header, nil)
		o.send, o.sendN, o.nextSend = o.nextSend, 0, nil
	}
	if final {
		o.sendDone = true
	}
	for {
		n := len(data)
		if n > maxRecordPlaintext {
			n = maxRecordPlaintext
		}
		last := n == len(data)
		word := uint32(n)
		if final && last {
			word |= finalBit
		}
		header := u32b(word)
		out = append(out, header...)
		out = o.send.Encrypt(out, o.sendN, header, data[:n])
		o.sendN++
		data = data[n:]
		if last {
			return out
		}
	}
}

// Open takes bytes of the destination's direction: its reply (3 | Noise message 2), then
// records; it returns the plaintext of every record completed.
func (o *SealedOpener) Open(data []byte) ([]byte, error) {
	if o.recv == nil {
		need := 49 - len(o.reply)
		if need > len(data) {
			need = len(data)
		}
		o.reply = append(o.reply, data[:need]...)
		data = data[need:]
		if len(o.reply) < 49 {
			return nil, nil
		}
		if o.reply[0] != sealingVersion {
			return nil, fmt.Errorf("unsupported sealing version %d in the reply", o.reply[0])
		}
		_, toDestination, toOpener, err := o.hs.ReadMessage(nil, o.reply[1:])
		if err != nil {
			return nil, fmt.Errorf("Noise message 2: %w", err)
		}
		o.recv = toOpener.Cipher()
		o.mu.Lock()
		if !o.sendDone {
			o.nextSend = toDestination.Cipher()
		}
		o.mu.Unlock()
		close(o.Replied)
	}
	o.buf = append(o.buf, data...)
	var plain []byte
	for len(o.buf) >= 4 {
		if o.Finished {
			return nil, errors.New("bytes after the final record")
		}
		word := binary.BigEndian.Uint32(o.buf)
		if word&keyChangeBit != 0 {
			return nil, errors.New("a key-change record in the destination's direction")
		}
		length := int(word &^ finalBit)
		if length > maxRecordPlaintext {
			return nil, fmt.Errorf("record length %d", length)
		}
		end := 4 + length + recordTag
		if len(o.buf) < end {
			break
		}
		out, err := o.recv.Decrypt(nil, o.recvN, o.buf[:4], o.buf[4:end])
		if err != nil {
			return nil, fmt.Errorf("record %d failed authentication", o.recvN)
		}
		o.recvN++
		plain = append(plain, out...)
		o.buf = o.buf[end:]
		if word&finalBit != 0 {
			o.Finished = true
		}
	}
	return plain, nil
}

// sealingVectors checks tests/vectors/sealing.json with flynn/noise: the key exchange and
// records this code makes from the fixed secrets, and the destination's side read back.
func sealingVectors(args []string) error {
	raw, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var v struct {
		OpenerSeed                  string   `json:"opener_seed"`
		DestinationSealingPublicKey string   `json:"destination_sealing_public_key"`
		OpenerEphemeralPrivate      string   `json:"opener_ephemeral_private"`
		Message1Payload             string   `json:"message1_payload"`
		OpenedMs                    uint64   `json:"opened_ms"`
		Service                     string   `json:"service"`
		ResumeToken                 string   `json:"resume_token"`
		ToDestination               []string `json:"to_destination_plaintexts"`
		BeforeReply                 int      `json:"to_destination_before_reply"`
		ToOpener                    []string `json:"to_opener_plaintexts"`
		Cases                       []struct {
			Suite         byte   `json:"suite"`
			KeyExchange   string `json:"key_exchange"`
			ReplyHeader   string `json:"reply_header"`
			ToDestination string `json:"opener_to_destination_records"`
			ToOpener      string `json:"destination_to_opener_records"`
		}
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	unhex := func(s string) []byte { b, _ := hex.DecodeString(s); return b }
	seed := unhex(v.OpenerSeed)
	nodeID := NodeID(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
	for _, c := range v.Cases {
		o, err := newSealedOpener(SealingPrivateKey(seed), nodeID, unhex(v.DestinationSealingPublicKey),
			v.Service, unhex(v.ResumeToken), c.Suite, nil, v.OpenedMs,
			unhex(v.OpenerEphemeralPrivate), unhex(v.Message1Payload))
		if err != nil {
			return err
		}
		if hex.EncodeToString(o.KeyExchange) != c.KeyExchange {
			return fmt.Errorf("suite %d: key exchange differs: %x", c.Suite, o.KeyExchange)
		}
		// the early records, then the reply is read, then the key change and the rest
		var records []byte
		for i, text := range v.ToDestination[:v.BeforeReply] {
			records = append(records, o.Seal(unhex(text), i == len(v.ToDestination)-1)...)
		}
		plain, err := o.Open(unhex(c.ReplyHeader + c.ToOpener))
		if err != nil {
			return fmt.Errorf("suite %d: %w", c.Suite, err)
		}
		for i, text := range v.ToDestination {
			if i >= v.BeforeReply {
				records = append(records, o.Seal(unhex(text), i == len(v.ToDestination)-1)...)
			}
		}
		if hex.EncodeToString(records) != c.ToDestination {
			return fmt.Errorf("suite %d: opener records differ", c.Suite)
		}
		if !o.Finished || hex.EncodeToString(plain) != strings.Join(v.ToOpener, "") {
			return fmt.Errorf("suite %d: destination records read as %x", c.Suite, plain)
		}
	}
	fmt.Println("ok")
	return nil
}
