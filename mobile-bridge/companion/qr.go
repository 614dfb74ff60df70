package companion

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // QR images arrive as PNG from the API, but screenshots come in any format
	_ "image/jpeg"
	_ "image/png"
	"net/url"
	"strings"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// MaxQRPixels bounds the images DecodeQR accepts. A QR code needs far fewer pixels; the bound
// keeps a crafted image header from making the decoder allocate gigabytes.
const MaxQRPixels = 4096 * 4096

// DecodeQR returns the text of the QR code in a PNG, JPEG or GIF image.
func DecodeQR(img []byte) (string, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		return "", fmt.Errorf("companion: not a PNG, JPEG or GIF image: %w", err)
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxQRPixels {
		return "", fmt.Errorf("companion: image of %dx%d pixels is too large for a QR code", cfg.Width, cfg.Height)
	}
	m, _, err := image.Decode(bytes.NewReader(img))
	if err != nil {
		return "", fmt.Errorf("companion: decode image: %w", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(m)
	if err != nil {
		return "", fmt.Errorf("companion: read image: %w", err)
	}
	// Photos and screenshots need the detector; a bare rendered code (what the API returns) is
	// also read by the pure-barcode path, which survives a missing quiet zone.
	reader := qrcode.NewQRCodeReader()
	res, err := reader.Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_TRY_HARDER: true})
	if err != nil {
		res, err = reader.Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	}
	if err != nil {
		return "", fmt.Errorf("companion: no readable QR code in image: %w", err)
	}
	return res.GetText(), nil
}

// DecodeQRDataURI decodes the QR code in a data URI such as the qr_code field of an initiation
// response ("data:image/png;base64,…").
func DecodeQRDataURI(uri string) (string, error) {
	rest, ok := strings.CutPrefix(uri, "data:")
	if !ok {
		return "", errors.New("companion: not a data URI")
	}
	meta, payload, ok := strings.Cut(rest, ",")
	if !ok {
		return "", errors.New("companion: data URI has no payload")
	}
	mediaType, params, _ := strings.Cut(meta, ";")
	if !strings.HasPrefix(strings.ToLower(mediaType), "image/") {
		return "", fmt.Errorf("companion: data URI holds %q, want an image", mediaType)
	}
	var img []byte
	if strings.HasSuffix(strings.ToLower(params), "base64") {
		// Tolerate padding-free and URL-escaped payloads as copied out of HTML or logs.
		p, err := url.PathUnescape(payload)
		if err != nil {
			return "", fmt.Errorf("companion: data URI payload: %w", err)
		}
		img, err = base64.StdEncoding.DecodeString(p)
		if err != nil {
			img, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(p, "="))
		}
		if err != nil {
			return "", fmt.Errorf("companion: data URI payload is not base64: %w", err)
		}
	} else {
		p, err := url.PathUnescape(payload)
		if err != nil {
			return "", fmt.Errorf("companion: data URI payload: %w", err)
		}
		img = []byte(p)
	}
	return DecodeQR(img)
}
