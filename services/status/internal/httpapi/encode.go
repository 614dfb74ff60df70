package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The poll answers the same small object thousands of times a second; it is encoded by hand
// into a pooled buffer instead of through reflection. The bytes are exactly what
// httpx.WriteJSON (encoding/json without HTML escaping, plus a newline) writes; a test holds the
// two to that.

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeStatus writes d as the JSON body of a 200 answer.
func writeStatus(w http.ResponseWriter, d StatusDTO) {
	bp := bufPool.Get().(*[]byte)
	b := appendStatus((*bp)[:0], d)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Cache-Control"] = []string{"no-store"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	*bp = b
	bufPool.Put(bp)
}

func appendStatus(b []byte, d StatusDTO) []byte {
	b = append(b, `{"status":`...)
	b = appendString(b, d.Status)
	b = append(b, `,"id":`...)
	b = appendString(b, d.ID)
	b = append(b, `,"sub":`...)
	b = appendString(b, d.Sub)
	b = append(b, `,"type":`...)
	b = appendString(b, d.Type)
	b = append(b, `,"expires_at":`...)
	b = appendTime(b, d.ExpiresAt)
	b = append(b, `,"updated_at":`...)
	b = appendTime(b, d.UpdatedAt)
	if d.DeviceID != "" {
		b = append(b, `,"device_id":`...)
		b = appendString(b, d.DeviceID)
	}
	if d.PHID != "" {
		b = append(b, `,"ph_id":`...)
		b = appendString(b, d.PHID)
	}
	if d.Destination != "" {
		b = append(b, `,"destination":`...)
		b = appendString(b, d.Destination)
	}
	if d.Delivery != "" {
		b = append(b, `,"delivery":`...)
		b = appendString(b, d.Delivery)
	}
	if d.MFAToken != "" {
		b = append(b, `,"mfa_token":`...)
		b = appendString(b, d.MFAToken)
	}
	return append(b, "}\n"...)
}

// appendString appends s as a JSON string: plain printable ASCII as it is, anything else the
// way encoding/json writes it.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return appendStringSlow(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendStringSlow(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

func appendTime(b []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		// encoding/json refuses such times; never stored, but do not write invalid JSON.
		data, _ := json.Marshal(t.Format(time.RFC3339Nano))
		return append(b, data...)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}
