package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The lean load generator. Go's net/http client spends more CPU per request than the net/http
// server it measures, and on two shared cores that CPU is taken from the server: bare looks
// slower than it is and every ratio to it looks better. This client does what wrk does and no
// more: a keep-alive HTTP/1.1 connection per worker, requests as bytes built beforehand (or
// appended into a reused buffer), and a parser that reads the status line, the few headers it
// needs and a Content-Length or chunked body into a reused buffer.

// rawClient holds one connection per worker to one host; a worker uses only its own.
type rawClient struct {
	host  string // host:port
	conns []*rawConn
}

// newRawClient is a client for n workers to base (http://host:port). It dials lazily.
func newRawClient(base string, n int) *rawClient {
	c := &rawClient{host: strings.TrimPrefix(base, "http://"), conns: make([]*rawConn, n)}
	for i := range c.conns {
		c.conns[i] = &rawConn{addr: c.host}
	}
	return c
}

// conn is worker w's connection.
func (c *rawClient) conn(w int) *rawConn { return c.conns[w] }

func (c *rawClient) close() {
	for _, cn := range c.conns {
		cn.close()
	}
}

// request is the bytes of one request to the client's host. body nil sends no body; a POST
// without one says Content-Length: 0. hdr holds extra header name/value pairs.
func (c *rawClient) request(method, path, token string, body []byte, hdr ...string) []byte {
	b := c.head(method, path, token, hdr...)
	if body != nil || method == "POST" {
		b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// head is a request line and headers up to, not including, Content-Type and the blank line:
// the prefix a request with a per-call body starts with (see appendJSONBody).
func (c *rawClient) head(method, path, token string, hdr ...string) []byte {
	b := make([]byte, 0, 512)
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.host...)
	b = append(b, "\r\nUser-Agent: bench-load\r\n"...)
	if token != "" {
		b = append(b, "Authorization: Bearer "...)
		b = append(b, token...)
		b = append(b, "\r\n"...)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		b = append(b, hdr[i]...)
		b = append(b, ": "...)
		b = append(b, hdr[i+1]...)
		b = append(b, "\r\n"...)
	}
	return b
}

// appendJSONBody completes a request started by head with a JSON body.
func appendJSONBody(b, head, body []byte) []byte {
	b = append(b[:0], head...)
	b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// rawConn is one keep-alive HTTP/1.1 connection; not safe for concurrent use.
type rawConn struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
	body []byte
}

func (c *rawConn) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// do sends req and reads the answer. The body is valid until the next call. A connection that
// fails is closed (the next call dials anew); one the server closes after answering, too.
func (c *rawConn) do(req []byte) (status int, body []byte, err error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return 0, nil, err
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 16<<10)
		} else {
			c.br.Reset(conn)
		}
	}
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.conn.Write(req); err != nil {
		c.close()
		return 0, nil, err
	}
	status, keep, err := c.read()
	if err != nil || !keep {
		c.close()
	}
	return status, c.body, err
}

var errMalformed = errors.New("raw client: malformed response")

// read parses one response into c.body and says whether the connection stays open.
func (c *rawConn) read() (status int, keep bool, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, errMalformed
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, errMalformed
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "content-length"):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, false, errMalformed
			}
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiEqualFold(value, "chunked")
		case asciiEqualFold(name, "connection"):
			if asciiEqualFold(value, "close") {
				keep = false
			}
		}
	}
	c.body = c.body[:0]
	switch {
	case status == 304 || status == 204 || status < 200:
	case chunked:
		err = c.readChunked()
	case length >= 0:
		err = c.readN(length)
	default: // the body runs to the end of the connection
		keep = false
		var b bytes.Buffer
		_, err = io.Copy(&b, c.br)
		c.body = append(c.body, b.Bytes()...)
	}
	return status, keep, err
}

func (c *rawConn) readN(n int) error {
	start := len(c.body)
	c.body = slices.Grow(c.body, n)[:start+n]
	_, err := io.ReadFull(c.br, c.body[start:])
	return err
}

func (c *rawConn) readChunked() error {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		n, err := strconv.ParseUint(string(size), 16, 31)
		if err != nil {
			return errMalformed
		}
		if n == 0 {
			break
		}
		if err := c.readN(int(n)); err != nil {
			return err
		}
		if _, err := c.br.Discard(2); err != nil { // the chunk's CRLF
			return err
		}
	}
	for { // trailers, up to the blank line
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// ok checks the status of one answer of a rawConn.
func ok(want int) func(int, []byte, error) error {
	return func(st int, body []byte, err error) error {
		if err != nil {
			return err
		}
		if st != want {
			return fmt.Errorf("status %d, want %d: %.200s", st, want, body)
		}
		return nil
	}
}
