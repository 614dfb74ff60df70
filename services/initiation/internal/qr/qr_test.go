package qr_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"github.com/mfaflow/mfaflow/services/initiation/internal/qr"
)

func newUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// uris are shaped like what the initiation service puts in a QR, from short to long.
func uris(t testing.TB) []string {
	t.Helper()
	long := url.QueryEscape("a.very.long.name+with-tags@subdomain.corporate-example.co.uk")
	return []string{
		"otpauth://totp/mfaflow:alice%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=mfaflow",
		"otpauth://totp/mfaflow:alice%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=mfaflow" +
			"&algorithm=SHA1&digits=6&period=30&eid=" + newUUID(t) +
			"&burl=http%3A%2F%2Flocalhost%3A8080&cid=" + newUUID(t) + "&sub=alice&t=totp",
		"otpauth://totp/mfaflow:bob?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=mfaflow" +
			"&algorithm=SHA256&digits=8&period=60&eid=" + newUUID(t) +
			"&burl=https%3A%2F%2Fmfa.example.com%2Fapi%2Fv1&cid=" + newUUID(t) + "&sub=bob&t=totp",
		"otpauth://totp/mfaflow:" + long + "?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" +
			"&issuer=mfaflow&algorithm=SHA512&digits=8&period=30&eid=" + newUUID(t) +
			"&burl=https%3A%2F%2Fmfa.internal.corporate-example.co.uk%3A8443%2Fenroll&cid=" + newUUID(t) +
			"&sub=" + long + "&t=totp",
		// Not a URI at all, but byte-mode content with non-ASCII must come back byte for byte.
		"otpauth://totp/mfaflow:Zoë?secret=JBSWY3DPEHPK3PXP&issuer=mfaflow",
	}
}

func decode(t testing.TB, img image.Image) string {
	t.Helper()
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatalf("binary bitmap: %v", err)
	}
	// First without hints, the way a scanner finds a code. gozxing's detector misses a few valid
	// symbols (it fails to read the version block of some); its pure-barcode mode, which reads a
	// quiet-zoned, whole-pixel image directly, then decodes them. TestZbarDecodes holds the
	// PNGs to a second, independent decoder with no such help.
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		res, err = qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	}
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return res.GetText()
}

func TestPNGDecodes(t *testing.T) {
	for _, content := range uris(t) {
		t.Run(strconv.Itoa(len(content)), func(t *testing.T) {
			raw, err := qr.PNG(content)
			if err != nil {
				t.Fatal(err)
			}
			img := checkPNG(t, raw)
			if got := decode(t, img); got != content {
				t.Fatalf("decoded %q\nwant    %q", got, content)
			}
		})
	}
}

// checkPNG asserts what FINDINGS requires of the delivered image and returns it decoded.
func checkPNG(t *testing.T, raw []byte) image.Image {
	t.Helper()
	// IHDR: bit depth at offset 24, colour type at 25 (3 = paletted).
	if len(raw) < 26 || raw[24] != 1 || raw[25] != 3 {
		t.Fatalf("want a 1-bit paletted PNG, IHDR bit depth/colour type = %d/%d", raw[24], raw[25])
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != b.Dy() {
		t.Fatalf("not square: %v", b)
	}
	side := b.Dx()
	dark := func(x, y int) bool {
		r, g, bl, _ := img.At(x, y).RGBA()
		return r+g+bl < 3*0x8000
	}
	// The top-left finder pattern starts right after the quiet zone: its first row is 7 dark
	// modules, which gives the module size without knowing the implementation.
	first := -1
	for i := 0; i < side && first < 0; i++ {
		if dark(i, i) {
			first = i
		}
	}
	if first < 0 {
		t.Fatal("no dark pixel on the diagonal")
	}
	run := 0
	for x := first; x < side && dark(x, first); x++ {
		run++
	}
	if run%7 != 0 {
		t.Fatalf("finder pattern row is %d px, not a whole number of modules", run)
	}
	scale := run / 7
	if scale < 4 {
		t.Fatalf("%d px per module, want at least 4", scale)
	}
	if first != 4*scale {
		t.Fatalf("quiet zone is %d px, want 4 modules = %d px", first, 4*scale)
	}
	if side%scale != 0 {
		t.Fatalf("side %d px is not a whole number of %d px modules", side, scale)
	}
	qz := 4 * scale
	for y := range side {
		for x := range side {
			inner := x >= qz && x < side-qz && y >= qz && y < side-qz
			if !inner && dark(x, y) {
				t.Fatalf("dark pixel at (%d,%d) in the quiet zone", x, y)
			}
		}
	}
	// Every module must be a solid scale×scale square, or module size is not what it seems.
	for y := qz; y < side-qz; y += scale {
		for x := qz; x < side-qz; x += scale {
			d := dark(x, y)
			for dy := range scale {
				for dx := range scale {
					if dark(x+dx, y+dy) != d {
						t.Fatalf("module at (%d,%d) px is not uniform", x, y)
					}
				}
			}
		}
	}
	t.Logf("%d bytes, %d px, %d px/module, %d modules", len(raw), side, scale, side/scale-8)
	return img
}

func TestPNGDataURI(t *testing.T) {
	for _, content := range uris(t) {
		uri, err := qr.PNGDataURI(content)
		if err != nil {
			t.Fatal(err)
		}
		const prefix = "data:image/png;base64,"
		if !strings.HasPrefix(uri, prefix) {
			t.Fatalf("%.40q: want prefix %q", uri, prefix)
		}
		raw, err := base64.StdEncoding.DecodeString(uri[len(prefix):])
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, checkPNG(t, raw)); got != content {
			t.Fatalf("decoded %q\nwant    %q", got, content)
		}
	}
}

// TestBuffersNotShared guards the buffer reuse: results handed out earlier must not change when
// later calls, also concurrent ones, reuse the pooled buffers.
func TestBuffersNotShared(t *testing.T) {
	contents := uris(t)
	type result struct {
		png  []byte
		uri  string
		svg  string
		want string
	}
	results := make([]result, 4*len(contents))
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			c := contents[i%len(contents)]
			p, err := qr.PNG(c)
			if err != nil {
				t.Error(err)
				return
			}
			u, err := qr.PNGDataURI(c)
			if err != nil {
				t.Error(err)
				return
			}
			s, err := qr.SVG(c)
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = result{png: p, uri: u, svg: s, want: c}
		})
	}
	wg.Wait()
	for _, r := range results {
		if got := decode(t, mustPNG(t, r.png)); got != r.want {
			t.Fatalf("PNG decoded %q, want %q", got, r.want)
		}
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(r.uri, "data:image/png;base64,"))
		if !bytes.Equal(raw, r.png) {
			t.Fatal("PNGDataURI and PNG disagree")
		}
		if got := decode(t, rasterSVG(t, r.svg, 4)); got != r.want {
			t.Fatalf("SVG decoded %q, want %q", got, r.want)
		}
	}
}

func mustPNG(t *testing.T, raw []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestErrors(t *testing.T) {
	for _, content := range []string{"", strings.Repeat("x", 3000)} {
		if _, err := qr.PNG(content); err == nil {
			t.Errorf("PNG(%d bytes): want error", len(content))
		}
		if _, err := qr.PNGDataURI(content); err == nil {
			t.Errorf("PNGDataURI(%d bytes): want error", len(content))
		}
		if _, err := qr.SVG(content); err == nil {
			t.Errorf("SVG(%d bytes): want error", len(content))
		}
	}
}

func TestSVG(t *testing.T) {
	for _, content := range uris(t) {
		t.Run(strconv.Itoa(len(content)), func(t *testing.T) {
			doc, err := qr.SVG(content)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(doc, "<svg") && !strings.HasPrefix(doc, "<?xml") {
				t.Fatalf("does not start as an SVG document: %.40q", doc)
			}
			svg := parseSVG(t, doc)
			if svg.shapeRendering != "crispEdges" {
				t.Errorf("shape-rendering = %q", svg.shapeRendering)
			}
			if svg.width <= 0 || svg.width != svg.height {
				t.Errorf("width/height = %d/%d", svg.width, svg.height)
			}
			if svg.width%svg.side != 0 || svg.width/svg.side < 4 {
				t.Errorf("width %d px for %d modules: want a whole number >= 4 px per module", svg.width, svg.side)
			}
			// The SVG must draw the same code as the PNG, module for module.
			raw, err := qr.PNG(content)
			if err != nil {
				t.Fatal(err)
			}
			p := mustPNG(t, raw)
			if p.Bounds().Dx() != svg.width {
				t.Errorf("SVG is %d px, PNG %d px", svg.width, p.Bounds().Dx())
			}
			r := rasterSVG(t, doc, 1)
			s := p.Bounds().Dx() / svg.side
			for y := range svg.side {
				for x := range svg.side {
					if isDark(r.At(x, y)) != isDark(p.At(x*s, y*s)) {
						t.Fatalf("module (%d,%d) differs between SVG and PNG", x, y)
					}
				}
			}
			// And it must scan on its own, at the size it declares.
			if got := decode(t, rasterSVG(t, doc, svg.width/svg.side)); got != content {
				t.Fatalf("decoded %q\nwant    %q", got, content)
			}
		})
	}
}

func isDark(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return r+g+b < 3*0x8000
}

type svgDoc struct {
	side           int // viewBox side in modules, quiet zone included
	width, height  int
	shapeRendering string
	bg             bool // a white rect covering the viewBox
	d              string
	paths          int
}

// parseSVG walks the whole document with encoding/xml, so any malformation fails the test, and
// picks out what the rasteriser needs.
func parseSVG(t *testing.T, doc string) svgDoc {
	t.Helper()
	var s svgDoc
	dec := xml.NewDecoder(strings.NewReader(doc))
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("malformed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			depth++
			attr := func(name string) string {
				for _, a := range el.Attr {
					if a.Name.Local == name {
						return a.Value
					}
				}
				return ""
			}
			switch el.Name.Local {
			case "svg":
				if depth != 1 || el.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root svg element at depth %d in namespace %q", depth, el.Name.Space)
				}
				vb := strings.Fields(attr("viewBox"))
				if len(vb) != 4 || vb[0] != "0" || vb[1] != "0" || vb[2] != vb[3] {
					t.Fatalf("viewBox = %q", attr("viewBox"))
				}
				s.side = atoi(t, vb[2])
				s.width = atoi(t, attr("width"))
				s.height = atoi(t, attr("height"))
				s.shapeRendering = attr("shape-rendering")
			case "rect":
				if attr("fill") == "#fff" && atoi(t, attr("width")) == s.side && atoi(t, attr("height")) == s.side {
					s.bg = true
				}
			case "path":
				s.paths++
				s.d = attr("d")
				if f := attr("fill"); f != "#000" {
					t.Fatalf("path fill = %q", f)
				}
			}
		case xml.EndElement:
			depth--
		}
	}
	if s.side == 0 || !s.bg || s.paths != 1 {
		t.Fatalf("want a viewBox, a white background rect and exactly one path; got %+v", s)
	}
	return s
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

// rasterSVG draws the path of doc at scale px per viewBox unit. It understands the absolute
// moveto and relative h/v/z commands the package emits, and insists every subpath is an
// axis-aligned rectangle on whole module coordinates, the only shapes a QR needs.
func rasterSVG(t *testing.T, doc string, scale int) *image.Gray {
	t.Helper()
	s := parseSVG(t, doc)
	img := image.NewGray(image.Rect(0, 0, s.side*scale, s.side*scale))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	d := s.d
	num := func() int {
		d = strings.TrimLeft(d, " ,")
		end := 0
		for end < len(d) && (d[end] == '-' || d[end] >= '0' && d[end] <= '9') {
			end++
		}
		n := atoi(t, d[:end])
		d = d[end:]
		return n
	}
	var x, y int
	var pts []image.Point
	rects := 0
	for d = strings.TrimSpace(d); d != ""; d = strings.TrimLeft(d, " ") {
		cmd := d[0]
		d = d[1:]
		switch cmd {
		case 'M':
			if len(pts) != 0 {
				t.Fatalf("moveto inside an open subpath")
			}
			x = num()
			y = num()
			pts = append(pts, image.Pt(x, y))
		case 'h':
			x += num()
			pts = append(pts, image.Pt(x, y))
		case 'v':
			y += num()
			pts = append(pts, image.Pt(x, y))
		case 'z', 'Z':
			r := rectOf(t, pts)
			if r.Empty() || r.Min.X < 4 || r.Min.Y < 4 || r.Max.X > s.side-4 || r.Max.Y > s.side-4 {
				t.Fatalf("rectangle %v is empty or in the quiet zone of %d modules", r, s.side)
			}
			for py := r.Min.Y * scale; py < r.Max.Y*scale; py++ {
				for px := r.Min.X * scale; px < r.Max.X*scale; px++ {
					img.Pix[py*img.Stride+px] = 0
				}
			}
			x, y = pts[0].X, pts[0].Y
			pts = pts[:0]
			rects++
		default:
			t.Fatalf("unexpected path command %q", cmd)
		}
	}
	if len(pts) != 0 || rects == 0 {
		t.Fatalf("path ends in an open subpath or draws nothing (%d rectangles)", rects)
	}
	return img
}

// rectOf returns the rectangle that pts outline, failing unless they are its four distinct
// corners joined by horizontal and vertical edges (the closing edge included).
func rectOf(t *testing.T, pts []image.Point) image.Rectangle {
	t.Helper()
	if len(pts) != 4 {
		t.Fatalf("subpath %v has %d vertices, want a rectangle", pts, len(pts))
	}
	r := image.Rectangle{Min: pts[0], Max: pts[0]}
	for _, p := range pts[1:] {
		r.Min.X, r.Min.Y = min(r.Min.X, p.X), min(r.Min.Y, p.Y)
		r.Max.X, r.Max.Y = max(r.Max.X, p.X), max(r.Max.Y, p.Y)
	}
	corners := map[image.Point]bool{}
	for i, p := range pts {
		q := pts[(i+1)%len(pts)]
		if p.X != q.X && p.Y != q.Y || p == q {
			t.Fatalf("subpath %v has a non-axis-aligned or empty edge", pts)
		}
		if (p.X != r.Min.X && p.X != r.Max.X) || (p.Y != r.Min.Y && p.Y != r.Max.Y) {
			t.Fatalf("subpath %v is not a rectangle", pts)
		}
		corners[p] = true
	}
	if len(corners) != 4 {
		t.Fatalf("subpath %v is not a rectangle", pts)
	}
	return r
}

func BenchmarkPNGDataURI(b *testing.B) {
	content := uris(b)[1]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := qr.PNGDataURI(content); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSVG(b *testing.B) {
	content := uris(b)[1]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := qr.SVG(content); err != nil {
			b.Fatal(err)
		}
	}
}

// TestZbarDecodes reads PNGs of realistic otpauth URIs of many lengths with zbar, the decoder
// behind many scanning apps, with no hints: every one must come back exactly.
func TestZbarDecodes(t *testing.T) {
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		t.Skip("zbarimg not installed (apt-get install zbar-tools); zbar decoding test skipped")
	}
	dir := t.TempDir()
	for pad := 0; pad <= 280; pad += 20 {
		content := "otpauth://totp/Example%20Corp:alice@example.com?algorithm=SHA1&burl=https%3A%2F%2Fmfa.example.com" +
			"&cid=" + newUUID(t) + "&digits=6&eid=" + newUUID(t) + "&issuer=Example+Corp&period=30" +
			"&secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&sub=" + strings.Repeat("b", pad) + "&t=totp"
		raw, err := qr.PNG(content)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "qr.png")
		if err := os.WriteFile(file, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(zbar, "--quiet", "--raw", file).Output()
		if err != nil {
			t.Fatalf("%d bytes: zbar found no code: %v", len(content), err)
		}
		if got := strings.TrimSuffix(string(out), "\n"); got != content {
			t.Fatalf("%d bytes: zbar read %q, want %q", len(content), got, content)
		}
	}
}
