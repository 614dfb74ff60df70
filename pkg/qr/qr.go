// Package qr renders an otpauth URI as a QR code that authenticator apps can scan, cheaply.
//
// The QR is the most expensive part of an enrollment initiation, so this package draws the
// module matrix itself into a 1-bit paletted image, encodes it at png.BestSpeed and reuses its
// buffers, which makes drawing and PNG encoding a small fraction of the cost; what remains is
// computing the module matrix (gozxing's QR writer, several times faster than boombuler's for
// our URIs). It does not shrink the QR to save work, though: frontends show
// the image as delivered, and a QR at one pixel per module fails common decoders, so every module
// is a whole number of pixels (at least four) and there is always the 4-module quiet zone that
// ISO/IEC 18004 requires.
package qr

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strconv"
	"sync"

	"github.com/makiuchi-d/gozxing"
	zqr "github.com/makiuchi-d/gozxing/qrcode"
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

// palette puts white at index 0 so that a cleared pixel buffer is already the quiet zone and the
// background; with two entries the PNG encoder writes a 1-bit image.
var palette = color.Palette{color.Gray{Y: 0xff}, color.Gray{Y: 0x00}}

const (
	white = 0
	black = 1
)

// matrix is the module grid of one QR, without quiet zone.
type matrix struct {
	dim  int
	dark func(x, y int) bool
}

// errEmpty exists because an empty QR scans as nothing useful, so asking for one is a bug.
var errEmpty = errors.New("qr: empty content")

// encode computes the module matrix with gozxing's QR writer. For our URIs it is about three
// times faster than boombuler/barcode's, whose mask scoring dominated an initiation
// (BenchmarkPNGDataURI on 2 cores: 4.8 ms with gozxing, 14 ms with boombuler).
func encode(content string) (matrix, error) {
	if content == "" {
		return matrix{}, errEmpty
	}
	bits, err := writer.Encode(content, gozxing.BarcodeFormat_QR_CODE, 0, 0, encodeHints)
	if err != nil {
		return matrix{}, fmt.Errorf("qr: encoding %d bytes: %w", len(content), err)
	}
	if bits.GetWidth() != bits.GetHeight() {
		return matrix{}, fmt.Errorf("qr: unexpected QR size %dx%d", bits.GetWidth(), bits.GetHeight())
	}
	return matrix{dim: bits.GetWidth(), dark: bits.Get}, nil
}

var (
	writer = zqr.NewQRCodeWriter()
	// The quiet zone is drawn here, so the writer adds none. No character set hint: an
	// otpauth URI is ASCII (url.URL escapes the rest), and a UTF-8 hint would add an ECI
	// header that some scanners mishandle.
	encodeHints = map[gozxing.EncodeHintType]any{
		gozxing.EncodeHintType_ERROR_CORRECTION: errorCorrection,
		gozxing.EncodeHintType_MARGIN:           0,
	}
)

// scale picks whole pixels per module so the whole image is near targetPx, never below minScale.
func scale(dim int) int {
	side := dim + 2*quietZone
	s := (targetPx + side/2) / side
	return max(s, minScale)
}

// buffers are the per-call scratch space that is reused across calls through bufPool.
type buffers struct {
	pix []byte
	out bytes.Buffer
	txt []byte
}

var bufPool = sync.Pool{New: func() any { return new(buffers) }}

// encoderPool lets png.Encoder reuse its zlib writer and row buffers, which are most of what a
// PNG encode allocates.
type encoderPool struct{ p sync.Pool }

func (e *encoderPool) Get() *png.EncoderBuffer {
	b, _ := e.p.Get().(*png.EncoderBuffer)
	return b
}

func (e *encoderPool) Put(b *png.EncoderBuffer) { e.p.Put(b) }

// encoder trades a slightly larger file (still a few KB) for the cheapest deflate; a 1-bit QR
// compresses well at any level.
var encoder = png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: new(encoderPool)}

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

// writePNG leaves the PNG in bufs.out; the caller must copy it out before returning bufs.
func writePNG(content string, bufs *buffers) error {
	m, err := encode(content)
	if err != nil {
		return err
	}
	s := scale(m.dim)
	side := (m.dim + 2*quietZone) * s
	bufs.pix = grow(bufs.pix, side*side)
	pix := bufs.pix
	clear(pix)
	for y := range m.dim {
		row := pix[((quietZone+y)*s)*side:][:side]
		for x := 0; x < m.dim; {
			if !m.dark(x, y) {
				x++
				continue
			}
			x0 := x
			for x < m.dim && m.dark(x, y) {
				x++
			}
			fill(row[(quietZone+x0)*s:(quietZone+x)*s], black)
		}
		// The other pixel rows of this module row are identical.
		for r := 1; r < s; r++ {
			copy(pix[((quietZone+y)*s+r)*side:][:side], row)
		}
	}
	img := &image.Paletted{Pix: pix, Stride: side, Rect: image.Rect(0, 0, side, side), Palette: palette}
	bufs.out.Reset()
	if err := encoder.Encode(&bufs.out, img); err != nil {
		return fmt.Errorf("qr: encoding PNG: %w", err)
	}
	return nil
}

// SVG returns the QR as a standalone SVG document, for pages that scale the image: it stays sharp
// at any size, and crispEdges keeps anti-aliasing from greying the gaps between modules. The
// width and height attributes give the same size as PNG; the viewBox is in modules.
func SVG(content string) (string, error) {
	m, err := encode(content)
	if err != nil {
		return "", err
	}
	bufs := bufPool.Get().(*buffers)
	defer bufPool.Put(bufs)
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

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

// errorCorrection is level M (15 % recovery), the usual choice for otpauth QR codes: otpauth
// URIs are shown on screens, where damage is rare, and M keeps the symbol smaller than Q or H.
// Measured here: zbar decoded every symbol of a sweep over URI lengths 250-550; gozxing's
// default detector misses a few valid symbols (with its PURE_BARCODE hint it reads them all),
// so our tests decode with that fallback.
const errorCorrection = "M"
