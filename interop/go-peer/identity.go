// Node identity from docs/identity.md: node id, certificate, AUTH transcript.
package main

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/binary"
	"hash"
	"math/big"
	"strings"
	"time"
)

const (
	transcriptLabel = "accessfabric session v1 auth transcript"
	dialerLabel     = "accessfabric session v1 dialer signature"
	acceptorLabel   = "accessfabric session v1 acceptor signature"
	exporterLabel   = "EXPORTER-Channel-Binding"
	protocolVersion = 2
)

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NodeID derives afn1 + base32(body) + CRC-20 checksum from an Ed25519 public key.
func NodeID(pub []byte) string {
	sum := sha256.Sum256(append([]byte("accessfabric node id v1"), pub...))
	body := sum[:20]
	crc := uint32(0)
	for _, byte_ := range body {
		for bit := 7; bit >= 0; bit-- {
			in := uint32(byte_>>uint(bit)) & 1
			top := (crc >> 19) & 1
			crc = (crc << 1) & 0xFFFFF
			if top^in == 1 {
				crc ^= 0x80069 // x^20 + x^19 + x^6 + x^5 + x^3 + 1 without x^20
			}
		}
	}
	crc ^= 0xFFFFF
	alphabet := "abcdefghijklmnopqrstuvwxyz234567"
	check := []byte{alphabet[crc>>15&31], alphabet[crc>>10&31], alphabet[crc>>5&31], alphabet[crc&31]}
	return "afn1" + b32.EncodeToString(body) + string(check)
}

// ValidNodeIDFor: the claimed id (case-insensitive, as docs/identity.md parses it) is
// the one derived from the key.
func ValidNodeIDFor(claimed string, pub []byte) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false
	}
	return strings.ToLower(strings.TrimSpace(claimed)) == NodeID(pub)
}

func lp(h hash.Hash, part []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(part)))
	h.Write(n[:])
	h.Write(part)
}

// Transcript = sha256(lp(label) || lp(dialer HELLO) || lp(acceptor HELLO) || lp(binding)).
func Transcript(dialerHello, acceptorHello, binding []byte) []byte {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(transcriptLabel), dialerHello, acceptorHello, binding} {
		lp(h, part)
	}
	return h.Sum(nil)
}

// SignedMessage = role label || transcript (plain concatenation).
func SignedMessage(transcript []byte, dialer bool) []byte {
	label := acceptorLabel
	if dialer {
		label = dialerLabel
	}
	return append([]byte(label), transcript...)
}

// Certificate: self-signed X.509 with the node key, CN = node id.
func Certificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	pub := key.Public().(ed25519.PublicKey)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: NodeID(pub)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, pub, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// hkdfExpandLabel is RFC 8446 §7.1 with SHA-256 or SHA-384 (used by the vector check).
func hkdfExpandLabel(newHash func() hash.Hash, secret []byte, label string, context []byte, length int) []byte {
	full := "tls13 " + label
	info := []byte{byte(length >> 8), byte(length), byte(len(full))}
	info = append(info, full...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	var out, prev []byte
	for counter := byte(1); len(out) < length; counter++ {
		mac := hmac.New(newHash, secret)
		mac.Write(prev)
		mac.Write(info)
		mac.Write([]byte{counter})
		prev = mac.Sum(nil)
		out = append(out, prev...)
	}
	return out[:length]
}
