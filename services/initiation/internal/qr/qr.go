// Package qr renders an otpauth URI as a QR code that authenticator apps can scan, cheaply.
//
// The QR is the most expensive part of an enrollment initiation, so this package computes the
// module matrix itself (encode.go: byte mode, level M, the mask gozxing would choose, without
// gozxing's generic bit arrays) and writes a 1-bit paletted PNG directly, deflated at
// zlib.BestSpeed into reused buffers. It does not shrink the QR to save work, though: frontends show
// the image as delivered, and a QR at one pixel per module fails common decoders, so every module
// is a whole number of pixels (at least four) and there is always the 4-module quiet zone that
// ISO/IEC 18004 requires.
package qr

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"sync"
)

const (
	// quietZone is in modules; ISO/IEC 18004 requires four and scanners rely on it to find the
	// finder patterns against whatever surrounds the image.
	quietZone = 4
	// minScale is the fewest pixels per module that still scan reliably from a screen.
	minScale = 4
	// targetPx is the side the image aims at: large enough for a phone camera at arm's length,
	// small enough for a page; a typical mfaflow otpauth URI (version 10-12) lands at 270-300 px.
	targetPx = 300
)

// errEmpty exists because an empty QR scans as nothing useful, so asking for one is a bug.
var errEmpty = errors.New("qr: empty content")

// scale picks whole pixels per module so the whole image is near targetPx, never below minScale.
func scale(dim int) int {
	side := dim + 2*quietZone
	s := (targetPx + side/2) / side
	return max(s, minScale)
}

// buffers are the per-call scratch space that is reused across calls through bufPool.
type buffers struct {
	enc scratch
	row []byte // one packed pixel row, filter byte first
	out bytes.Buffer
	txt []byte
	zw  *zlib.Writer
}

var bufPool = sync.Pool{New: func() any { return new(buffers) }}

// PNGDataURI returns the QR as a data URI, the form frontends put straight into an <img src>.
func PNGDataURI(content string) (string, error) {
	bufs := bufPool.Get().(*buffers)
	defer bufPool.Put(bufs)
	if err := writePNG(content, bufs); err != nil {
		return "", err
	}
	const prefix = "data:image/png;base64,"
	raw := bufs.out.Bytes()
	n := len(prefix) + base64.StdEncoding.EncodedLen(len(raw))
	bufs.txt = grow(bufs.txt, n)
	copy(bufs.txt, prefix)
	base64.StdEncoding.Encode(bufs.txt[len(prefix):], raw)
	return string(bufs.txt), nil
}

// PNG returns the QR as PNG bytes owned by the caller, for transports that carry binary.
func PNG(content string) ([]byte, error) {
	bufs := bufPool.Get().(*buffers)
	defer bufPool.Put(bufs)
	if err := writePNG(content, bufs); err != nil {
		return nil, err
	}
	return bytes.Clone(bufs.out.Bytes()), nil
}

// pngSignature starts every PNG file.
var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// writePNG leaves the PNG in bufs.out; the caller must copy it out before returning bufs.
//
// It writes the PNG itself rather than through image/png, whose paletted path makes an
// interface call per pixel: a 1-bit paletted image (white index 0, black index 1), every row
// unfiltered, deflated at zlib.BestSpeed with a reused writer.
func writePNG(content string, bufs *buffers) error {
	m, err := encode(content, &bufs.enc)
	if err != nil {
		return err
	}
	s := scale(m.dim)
	side := (m.dim + 2*quietZone) * s
	rowLen := 1 + (side+7)/8
	bufs.row = grow(bufs.row, rowLen)
	row := bufs.row

	out := &bufs.out
	out.Reset()
	out.Write(pngSignature)
	var ihdr [13]byte
	binary.BigEndian.PutUint32(ihdr[0:], uint32(side))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(side))
	ihdr[8] = 1 // bit depth
	ihdr[9] = 3 // colour type: paletted
	writeChunk(out, "IHDR", ihdr[:])
	writeChunk(out, "PLTE", []byte{0xff, 0xff, 0xff, 0x00, 0x00, 0x00})

	start := out.Len()
	out.Write([]byte{0, 0, 0, 0, 'I', 'D', 'A', 'T'})
	if bufs.zw == nil {
		bufs.zw, err = zlib.NewWriterLevel(out, zlib.BestSpeed)
		if err != nil {
			return fmt.Errorf("qr: encoding PNG: %w", err)
		}
	} else {
		bufs.zw.Reset(out)
	}
	zw := bufs.zw
	// The quiet zone rows above and below are all white.
	clear(row)
	for range quietZone * s {
		zw.Write(row)
	}
	for y := range m.dim {
		clear(row[1:])
		bits := row[1:]
		for x := 0; x < m.dim; {
			if !m.dark(x, y) {
				x++
				continue
			}
			x0 := x
			for x < m.dim && m.dark(x, y) {
				x++
			}
			setBits(bits, (quietZone+x0)*s, (quietZone+x)*s)
		}
		// Every pixel row of this module row is the same.
		for range s {
			zw.Write(row)
		}
	}
	clear(row)
	for range quietZone * s {
		zw.Write(row)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("qr: encoding PNG: %w", err)
	}
	b := out.Bytes()
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-8))
	var crc [4]byte
	binary.BigEndian.PutUint32(crc[:], crc32.ChecksumIEEE(b[start+4:]))
	out.Write(crc[:])
	writeChunk(out, "IEND", nil)
	return nil
}

// setBits sets the bits of pixels [from, to) in a packed row, most significant bit first.
func setBits(b []byte, from, to int) {
	for ; from < to && from&7 != 0; from++ {
		b[from>>3] |= 0x80 >> (from & 7)
	}
	for ; from+8 <= to; from += 8 {
		b[from>>3] = 0xff
	}
	for ; from < to; from++ {
		b[from>>3] |= 0x80 >> (from & 7)
	}
}

func writeChunk(out *bytes.Buffer, typ string, data []byte) {
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(data)))
	copy(hdr[4:], typ)
	out.Write(hdr[:])
	out.Write(data)
	crc := crc32.NewIEEE()
	crc.Write(hdr[4:])
	crc.Write(data)
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc.Sum32())
	out.Write(sum[:])
}

// SVG returns the QR as a standalone SVG document, for pages that scale the image: it stays sharp
// at any size, and crispEdges keeps anti-aliasing from greying the gaps between modules. The
// width and height attributes give the same size as PNG; the viewBox is in modules.
func SVG(content string) (string, error) {
	bufs := bufPool.Get().(*buffers)
	defer bufPool.Put(bufs)
	m, err := encode(content, &bufs.enc)
	if err != nil {
		return "", err
	}
	side := m.dim + 2*quietZone
	px := side * scale(m.dim)

	b := bufs.txt[:0]
	b = append(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 `...)
	b = strconv.AppendInt(b, int64(side), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(side), 10)
	b = append(b, `" width="`...)
	b = strconv.AppendInt(b, int64(px), 10)
	b = append(b, `" height="`...)
	b = strconv.AppendInt(b, int64(px), 10)
	b = append(b, `" shape-rendering="crispEdges"><rect width="`...)
	b = strconv.AppendInt(b, int64(side), 10)
	b = append(b, `" height="`...)
	b = strconv.AppendInt(b, int64(side), 10)
	b = append(b, `" fill="#fff"/><path fill="#000" d="`...)
	// One rectangle per horizontal run of dark modules keeps the path a fraction of the size of
	// one square per module.
	for y := range m.dim {
		for x := 0; x < m.dim; {
			if !m.dark(x, y) {
				x++
				continue
			}
			x0 := x
			for x < m.dim && m.dark(x, y) {
				x++
			}
			w := int64(x - x0)
			b = append(b, 'M')
			b = strconv.AppendInt(b, int64(quietZone+x0), 10)
			b = append(b, ' ')
			b = strconv.AppendInt(b, int64(quietZone+y), 10)
			b = append(b, 'h')
			b = strconv.AppendInt(b, w, 10)
			b = append(b, "v1h-"...)
			b = strconv.AppendInt(b, w, 10)
			b = append(b, 'z')
		}
	}
	b = append(b, `"/></svg>`...)
	bufs.txt = b
	return string(b), nil
}

// grow returns b with length n, reusing its backing array when it is large enough.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// Error correction is level M (15 % recovery), the usual choice for otpauth QR codes: otpauth
// URIs are shown on screens, where damage is rare, and M keeps the symbol smaller than Q or H.
// Measured here: zbar decoded every symbol of a sweep over URI lengths 250-550; gozxing's
// default detector misses a few valid symbols (with its PURE_BARCODE hint it reads them all),
// so our tests decode with that fallback. encode.go hard-codes it.
