package tests_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vw "github.com/descope/virtualwebauthn"
	"github.com/mfaflow/mfaflow/events/apidoc"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/tests/harness"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// apiDocURL names pkg/apidoc/openapi.json for the schema compiler. The whole document is one
// resource, so the `$ref`s inside it ("#/components/schemas/Status") resolve as they are, and
// any schema in it is compiled by a JSON pointer (OpenAPI 3.1 schemas are JSON Schema 2020-12).
const apiDocURL = "https://mfaflow.dev/openapi.json"

// apiContract validates real HTTP exchanges against the OpenAPI document and records which
// operations they exercised.
type apiContract struct {
	doc      map[string]any
	compiler *jsonschema.Compiler

	mu      sync.Mutex
	schemas map[string]*jsonschema.Schema // by JSON pointer
	seen    map[string]map[int]bool       // "METHOD /template" -> statuses validated
}

func loadAPIContract(t *testing.T) *apiContract {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(apidoc.Document))
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(apiDocURL, doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return &apiContract{
		doc: doc.(map[string]any), compiler: c,
		schemas: map[string]*jsonschema.Schema{}, seen: map[string]map[int]bool{},
	}
}

// escapePtrToken escapes one JSON pointer token (RFC 6901).
func escapePtrToken(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// jsonPtr joins tokens into a JSON pointer fragment ("#/a/b~1c").
func jsonPtr(base string, tokens ...string) string {
	for _, tok := range tokens {
		base += "/" + escapePtrToken(tok)
	}
	return base
}

// at returns the value at a JSON pointer fragment of the document.
func (c *apiContract) at(p string) (any, bool) {
	cur := any(c.doc)
	for _, tok := range strings.Split(strings.TrimPrefix(p, "#"), "/")[1:] {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// resolve returns the object at p after following `$ref`s, and the pointer it ends at.
func (c *apiContract) resolve(t apiReporter, p string) (map[string]any, string) {
	t.Helper()
	for range 8 {
		v, ok := c.at(p)
		obj, isObj := v.(map[string]any)
		if !ok || !isObj {
			t.Fatalf("openapi.json: nothing at %s", p)
		}
		ref, isRef := obj["$ref"].(string)
		if !isRef {
			return obj, p
		}
		p = ref
	}
	t.Fatalf("openapi.json: $ref chain at %s too long", p)
	return nil, ""
}

// schema compiles (once) the schema at pointer p.
func (c *apiContract) schema(t apiReporter, p string) *jsonschema.Schema {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.schemas[p]; ok {
		return s
	}
	s, err := c.compiler.Compile(apiDocURL + p)
	if err != nil {
		t.Fatalf("compile %s: %v", p, err)
	}
	c.schemas[p] = s
	return s
}

// validateJSON checks data against the schema at p.
func (c *apiContract) validateJSON(t apiReporter, what, p string, data []byte) {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s: body is not JSON: %v\n%s", what, err, data)
		return
	}
	if err := c.schema(t, p).Validate(inst); err != nil {
		t.Errorf("%s: body does not match %s: %v\n%s", what, p, err, data)
	}
}

// methodsOf returns the documented methods (upper case) of a path template.
func (c *apiContract) methodsOf(template string) []string {
	item, _ := c.at(jsonPtr("#/paths", template))
	var out []string
	for k := range item.(map[string]any) {
		switch k {
		case "get", "put", "post", "delete", "options", "head", "patch", "trace":
			out = append(out, strings.ToUpper(k))
		}
	}
	sort.Strings(out)
	return out
}

// operationKeys returns every documented operation as "METHOD /template".
func (c *apiContract) operationKeys() []string {
	var out []string
	for template := range c.doc["paths"].(map[string]any) {
		for _, m := range c.methodsOf(template) {
			out = append(out, m+" "+template)
		}
	}
	sort.Strings(out)
	return out
}

// apiReporter is the part of testing.T the checks use, so TestOpenAPIValidatorRejects can
// collect their complaints instead of failing.
type apiReporter interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// apiExchange is one finished request with what the checks need to know about it.
type apiExchange struct {
	harness.Response
	Method   string
	Template string // documented path template
	Path     string // the request path, without the query
	// Messages are the data messages a WebSocket carried after a 101.
	Messages [][]byte
}

// check validates x against the operation of its method and template: the status must be
// documented, the content type must be documented for it, the body must match that schema
// (SSE: every event's data), required headers must be present and every documented header must
// match its schema.
func (c *apiContract) check(t apiReporter, x apiExchange) {
	t.Helper()
	what := fmt.Sprintf("%s %s -> %d", x.Method, x.Path, x.Status)
	opPtr := jsonPtr("#/paths", x.Template, strings.ToLower(x.Method))
	if _, ok := c.at(opPtr); !ok {
		t.Errorf("%s: operation %s %s is not documented", what, x.Method, x.Template)
		return
	}
	respPtr := jsonPtr(opPtr, "responses", strconv.Itoa(x.Status))
	if _, ok := c.at(respPtr); !ok {
		t.Errorf("%s: status %d is not documented for %s %s\n%s", what, x.Status, x.Method, x.Template, x.Body)
		return
	}
	c.mu.Lock()
	key := x.Method + " " + x.Template
	if c.seen[key] == nil {
		c.seen[key] = map[int]bool{}
	}
	c.seen[key][x.Status] = true
	c.mu.Unlock()
	c.checkResponse(t, what, respPtr, x)
}

// checkResponse validates x against the response object at respPtr.
func (c *apiContract) checkResponse(t apiReporter, what, respPtr string, x apiExchange) {
	t.Helper()
	resp, respPtr := c.resolve(t, respPtr)

	headers, _ := resp["headers"].(map[string]any)
	for name := range headers {
		h, hPtr := c.resolve(t, jsonPtr(respPtr, "headers", name))
		vals := x.Header.Values(name)
		if len(vals) == 0 {
			if h["required"] == true {
				t.Errorf("%s: required header %s is missing", what, name)
			}
			continue
		}
		for _, v := range vals {
			inst := any(v)
			if err := c.schema(t, hPtr+"/schema").Validate(inst); err != nil {
				t.Errorf("%s: header %s: %q does not match %s: %v", what, name, v, hPtr, err)
			}
		}
	}

	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if len(x.Body) != 0 {
			t.Errorf("%s: documented without a body, got %q", what, x.Body)
		}
		if x.Status == http.StatusSwitchingProtocols {
			c.checkMessages(t, what, respPtr, x)
		}
		return
	}
	ct, _, err := mime.ParseMediaType(x.Header.Get("Content-Type"))
	if err != nil {
		t.Errorf("%s: Content-Type %q: %v", what, x.Header.Get("Content-Type"), err)
		return
	}
	if _, ok := content[ct]; !ok {
		t.Errorf("%s: content type %s is not documented (have %v)\n%s", what, ct, slices.Sorted(maps.Keys(content)), x.Body)
		return
	}
	mediaPtr := jsonPtr(respPtr, "content", ct)
	switch {
	case ct == "text/event-stream":
		c.checkEventStream(t, what, mediaPtr, x.Body)
	case ct == "application/json" || strings.HasSuffix(ct, "+json"):
		c.validateJSON(t, what, mediaPtr+"/schema", x.Body)
	default: // text: the body is one string
		if err := c.schema(t, mediaPtr+"/schema").Validate(string(x.Body)); err != nil {
			t.Errorf("%s: body does not match %s/schema: %v", what, mediaPtr, err)
		}
	}
	if ct == "application/problem+json" {
		var p struct{ Instance string }
		if err := json.Unmarshal(x.Body, &p); err == nil && p.Instance != x.Path {
			t.Errorf("%s: problem instance %q, want the request path", what, p.Instance)
		}
	}
}

// checkEventStream parses a finished SSE body and validates each event's data against the
// schema documented for its event name (x-sse-events); ids must be increasing integers.
func (c *apiContract) checkEventStream(t apiReporter, what, mediaPtr string, body []byte) {
	t.Helper()
	events, _ := c.at(mediaPtr + "/x-sse-events")
	if events == nil {
		t.Errorf("%s: %s documents no x-sse-events", what, mediaPtr)
		return
	}
	n, lastID := 0, 0
	for block := range strings.SplitSeq(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n\n") {
		name, id, data := "message", "", ""
		for line := range strings.SplitSeq(block, "\n") {
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "": // comment (heartbeat) or empty
			case "event":
				name = value
			case "id":
				id = value
			case "data":
				data += value
			case "retry":
				if _, err := strconv.Atoi(value); err != nil {
					t.Errorf("%s: retry %q is not an integer", what, value)
				}
			default:
				t.Errorf("%s: unknown SSE field %q", what, field)
			}
		}
		if data == "" {
			continue
		}
		n++
		if _, ok := events.(map[string]any)[name]; !ok {
			t.Errorf("%s: event %q is not documented", what, name)
			continue
		}
		if i, err := strconv.Atoi(id); err != nil || i <= lastID {
			t.Errorf("%s: event id %q does not increase from %d", what, id, lastID)
		} else {
			lastID = i
		}
		c.validateJSON(t, what+" event "+name, jsonPtr(mediaPtr, "x-sse-events", name), []byte(data))
	}
	if n == 0 {
		t.Errorf("%s: no event in the stream:\n%s", what, body)
	}
}

// checkMessages validates the messages a WebSocket carried against x-websocket-messages.
func (c *apiContract) checkMessages(t apiReporter, what, respPtr string, x apiExchange) {
	t.Helper()
	if len(x.Messages) == 0 {
		return
	}
	p := respPtr + "/x-websocket-messages/server"
	if _, ok := c.at(p); !ok {
		t.Errorf("%s: messages arrived but %s documents none", what, respPtr)
		return
	}
	for i, m := range x.Messages {
		c.validateJSON(t, fmt.Sprintf("%s message %d", what, i), p, m)
	}
}

// pathTemplateRegexp matches the concrete paths of a template.
func pathTemplateRegexp(template string) *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(regexp.QuoteMeta(template), `[^/]+`) + "$")
}

// checkUnknownRoute validates the router's answer to a path that no operation documents.
func (c *apiContract) checkUnknownRoute(t *testing.T, x apiExchange) {
	t.Helper()
	for template := range c.doc["paths"].(map[string]any) {
		if pathTemplateRegexp(template).MatchString(x.Path) {
			t.Fatalf("%s is documented as %s; pick an unknown path", x.Path, template)
		}
	}
	what := fmt.Sprintf("%s %s (unknown route) -> %d", x.Method, x.Path, x.Status)
	if x.Status != http.StatusNotFound {
		t.Errorf("%s: want 404", what)
		return
	}
	c.checkResponse(t, what, "#/components/responses/NotFound", x)
}

// checkWrongMethod validates the router's answer to a documented path with an undocumented
// method: 405 with an Allow header that lists exactly the documented methods (and HEAD with GET).
func (c *apiContract) checkWrongMethod(t *testing.T, x apiExchange) {
	t.Helper()
	documented := c.methodsOf(x.Template)
	if slices.Contains(documented, x.Method) {
		t.Fatalf("%s %s is documented; pick another method", x.Method, x.Template)
	}
	what := fmt.Sprintf("%s %s (wrong method) -> %d", x.Method, x.Path, x.Status)
	if x.Status != http.StatusMethodNotAllowed {
		t.Errorf("%s: want 405", what)
		return
	}
	c.checkResponse(t, what, "#/components/responses/MethodNotAllowed", x)
	want := slices.Clone(documented)
	if slices.Contains(want, http.MethodGet) {
		want = append(want, http.MethodHead)
	}
	var got []string
	for m := range strings.SplitSeq(x.Header.Get("Allow"), ",") {
		got = append(got, strings.TrimSpace(m))
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: Allow %v, want the documented methods %v", what, got, want)
	}
}

// apiRequest is one request to the stack. Path parameters fill the template's {names} in order.
type apiRequest struct {
	Method   string
	Template string
	Params   []string
	Query    string
	Token    string
	Body     any      // JSON-encoded unless nil, a string or []byte
	Header   []string // name, value pairs, set after the defaults
	// Linger is how long a websocket (after 101) is read when the server does not close it;
	// 0 means until the server closes, at most 10s.
	Linger time.Duration
}

func (r apiRequest) path(t *testing.T) string {
	t.Helper()
	i := 0
	p := regexp.MustCompile(`\{[^}]+\}`).ReplaceAllStringFunc(r.Template, func(string) string {
		if i >= len(r.Params) {
			t.Fatalf("%s: too few path parameters", r.Template)
		}
		i++
		return url.PathEscape(r.Params[i-1])
	})
	if i != len(r.Params) {
		t.Fatalf("%s: too many path parameters", r.Template)
	}
	return p
}

// sendAPI performs r against st with a deadline; a websocket upgrade (101) is kept open only to
// read its messages (up to the close frame) and is then closed.
// apiDriver sends requests to a stack and checks every answer against the contract.
type apiDriver struct {
	c  *apiContract
	st *harness.Stack
}

func (d *apiDriver) do(t *testing.T, r apiRequest) apiExchange {
	t.Helper()
	x := sendAPI(t, d.st, r)
	d.c.check(t, x)
	return x
}

// decodeAPI requires status want and decodes the body into out (when not nil).
func decodeAPI(t *testing.T, x apiExchange, want int, out any) {
	t.Helper()
	if x.Status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", x.Method, x.Path, x.Status, want, x.Body)
	}
	if out != nil {
		if err := json.Unmarshal(x.Body, out); err != nil {
			t.Fatalf("%s %s: %v", x.Method, x.Path, err)
		}
	}
}

// problemAPI requires a problem with status want and code.
func problemAPI(t *testing.T, x apiExchange, want int, code fault.Code) {
	t.Helper()
	var p struct{ Code string }
	decodeAPI(t, x, want, &p)
	if p.Code != string(code) {
		t.Errorf("%s %s: code %s, want %s", x.Method, x.Path, p.Code, code)
	}
}

func sendAPI(t *testing.T, st *harness.Stack, r apiRequest) apiExchange {
	t.Helper()
	var body io.Reader
	switch b := r.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(data)
	}
	path := r.path(t)
	target := st.URL + path
	if r.Query != "" {
		target += "?" + r.Query
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	for i := 0; i+1 < len(r.Header); i += 2 {
		req.Header.Set(r.Header[i], r.Header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, path, err)
	}
	defer resp.Body.Close()
	x := apiExchange{Response: harness.Response{Status: resp.StatusCode, Header: resp.Header}, Method: r.Method, Template: r.Template, Path: path}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		linger := r.Linger
		if linger <= 0 {
			linger = 10 * time.Second
		}
		x.Messages = readWSMessages(t, req, resp, linger)
		return x
	}
	if x.Body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("%s %s: read body: %v", r.Method, path, err)
	}
	return x
}

// wsHandshake are the handshake headers of a WebSocket client (RFC 6455 §4.1).
func wsHandshake(extra ...string) []string {
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	return append([]string{
		"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13",
		"Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key),
	}, extra...)
}

// readWSMessages checks the handshake answer and reads data messages until the server closes or
// linger passes. It is a minimal RFC 6455 client: the tests module does not depend on a
// websocket library.
func readWSMessages(t *testing.T, req *http.Request, resp *http.Response, linger time.Duration) [][]byte {
	t.Helper()
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Errorf("Sec-WebSocket-Accept %q, want %q", got, want)
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body is %T, not a connection", resp.Body)
	}
	// A server that keeps the connection open (the bridge) would block the read forever.
	timer := time.AfterFunc(linger, func() { _ = conn.Close() })
	defer timer.Stop()
	br := bufio.NewReader(conn)
	var msgs [][]byte
	for {
		op, payload, err := readWSFrame(br)
		if err != nil {
			return msgs // closed by us after the quiet period, or by the server
		}
		switch op {
		case 0x1, 0x2: // text, binary
			msgs = append(msgs, payload)
		case 0x8: // close: answer it
			if len(payload) >= 2 && binary.BigEndian.Uint16(payload) != 1000 {
				t.Errorf("websocket closed with %d %q, want 1000", binary.BigEndian.Uint16(payload), payload[2:])
			}
			_ = writeWSClose(conn)
			return msgs
		}
	}
}

// readWSFrame reads one unmasked server frame (messages here are never fragmented).
func readWSFrame(r io.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if h[1]&0x80 != 0 || n > 1<<20 {
		return 0, nil, fmt.Errorf("unexpected frame header %x len %d", h, n)
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(r, payload)
	return h[0] & 0x0f, payload, err
}

// writeWSClose sends a masked 1000 close frame, as a client must.
func writeWSClose(w io.Writer) error {
	mask := [4]byte{1, 2, 3, 4}
	payload := []byte{0x03, 0xe8}
	frame := []byte{0x88, 0x80 | byte(len(payload)), mask[0], mask[1], mask[2], mask[3]}
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	_, err := w.Write(frame)
	return err
}

// TestOpenAPISchemasCompile compiles every schema of the document, so a broken one fails here
// and not only when a response happens to reach it.
func TestOpenAPISchemasCompile(t *testing.T) {
	c := loadAPIContract(t)
	n := 0
	compile := func(p string) { c.schema(t, p); n++ }
	walkDoc(c.doc, "#", func(p, k string, child any, cp string) bool {
		switch {
		case k == "schema", p == "#/components/schemas":
			compile(cp) // nested schemas compile with their parent
			return false
		case k == "x-sse-events", k == "x-websocket-messages":
			for name := range child.(map[string]any) {
				compile(jsonPtr(cp, name))
			}
			return false
		}
		return true
	})
	if n < 20 {
		t.Fatalf("compiled only %d schemas", n)
	}
}

// TestOpenAPIFaultCodes checks the document against pkg/fault: the Problem `code` enum holds
// every code, and every problem response pins its codes to the status fault gives them.
func TestOpenAPIFaultCodes(t *testing.T) {
	c := loadAPIContract(t)
	enum, _ := c.at("#/components/schemas/Problem/properties/code/enum")
	var codes []string
	for _, v := range enum.([]any) {
		code := fault.Code(v.(string))
		if !code.Known() {
			t.Errorf("Problem.code lists %s, which pkg/fault does not know", code)
		}
		codes = append(codes, string(code))
	}
	for _, code := range []fault.Code{
		fault.BadRequest, fault.Unauthorized, fault.Forbidden, fault.NotFound, fault.Conflict,
		fault.Expired, fault.InvalidCode, fault.CodeReplayed, fault.Locked, fault.NoFactor,
		fault.PayloadTooLarge, fault.UnsupportedMethod, fault.TooManyRequests, fault.Unavailable,
		fault.Internal, fault.DevTokensDisabled, fault.InvalidCredential,
	} {
		if !slices.Contains(codes, string(code)) {
			t.Errorf("Problem.code does not list %s", code)
		}
	}
	check := func(p string, media any) {
		schema, _ := media.(map[string]any)["schema"].(map[string]any)
		props, _ := schema["properties"].(map[string]any)
		// jsonschema.UnmarshalJSON keeps numbers as json.Number.
		status := fmt.Sprint(props["status"].(map[string]any)["const"])
		pinned := props["code"].(map[string]any)
		var list []any
		if v, ok := pinned["const"]; ok {
			list = []any{v}
		} else {
			list, _ = pinned["enum"].([]any)
		}
		if len(list) == 0 {
			t.Errorf("%s: the codes are not pinned", p)
		}
		for _, v := range list {
			if got := fault.Code(v.(string)).Status(); strconv.Itoa(got) != status {
				t.Errorf("%s: code %s answers %d in pkg/fault, documented as %v", p, v, got, status)
			}
		}
	}
	walkDoc(c.doc, "#", func(p, k string, child any, _ string) bool {
		if k == "application/problem+json" {
			check(p, child)
			return false
		}
		return true
	})
}

// apiComplaints records what the checks report. Fatalf is reserved for a broken document, so it
// still fails the test.
type apiComplaints struct {
	*testing.T
	errs []string
}

func (c *apiComplaints) Errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// TestOpenAPIValidatorRejects shows that the checks bite: made-up answers that drift from the
// document in one way each must be reported, and a faithful one must not.
func TestOpenAPIValidatorRejects(t *testing.T) {
	c := loadAPIContract(t)
	const statusTemplate = "/verification-srv/verificationstatus/{status_id}"
	const id = "8a43275a-c637-4d80-bab1-a7cc0454a33c"
	jsonHeader := func(ct string, extra ...string) http.Header {
		h := http.Header{"Content-Type": {ct}, "Cache-Control": {"no-store"}}
		for i := 0; i+1 < len(extra); i += 2 {
			h.Set(extra[i], extra[i+1])
		}
		return h
	}
	status := func(fields string) []byte {
		return []byte(`{"status":"INITIATED","id":"` + id + `","sub":"alice","type":"TOTP","expires_at":"2030-01-01T00:00:00Z","updated_at":"2030-01-01T00:00:00.123456789Z"` + fields + `}`)
	}
	enrolled := `,"device_id":"d1","ph_id":"` + id + `"`
	etag := []string{"ETag", `"` + id + `-INITIATED-1"`}
	cases := []struct {
		name   string
		status int
		header http.Header
		body   []byte
		ok     bool
	}{
		{"Faithful", 200, jsonHeader("application/json", etag...), status(""), true},
		{"FaithfulEnrolled", 200, jsonHeader("application/json", etag...), bytes.Replace(status(enrolled), []byte("INITIATED"), []byte("ENROLLED"), 1), true},
		{"FaithfulProblem", 404, jsonHeader("application/problem+json"), []byte(`{"type":"https://mfaflow.dev/problems/not_found","title":"Not Found","status":404,"detail":"no such enrollment","instance":"/verification-srv/verificationstatus/` + id + `","code":"not_found"}`), true},
		{"UndocumentedField", 200, jsonHeader("application/json", etag...), status(`,"secret":"x"`), false},
		{"UnknownState", 200, jsonHeader("application/json", etag...), bytes.Replace(status(""), []byte("INITIATED"), []byte("DONE"), 1), false},
		{"EnrolledWithoutDevice", 200, jsonHeader("application/json", etag...), bytes.Replace(status(""), []byte("INITIATED"), []byte("ENROLLED"), 1), false},
		{"OpenWithDevice", 200, jsonHeader("application/json", etag...), status(enrolled), false},
		{"NotADate", 200, jsonHeader("application/json", etag...), bytes.Replace(status(""), []byte("2030-01-01T00:00:00Z"), []byte("tomorrow"), 1), false},
		{"MissingField", 200, jsonHeader("application/json", etag...), bytes.Replace(status(""), []byte(`"sub":"alice",`), nil, 1), false},
		{"MissingETag", 200, jsonHeader("application/json"), status(""), false},
		{"Cacheable", 200, http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"max-age=60"}, "Etag": {etag[1]}}, status(""), false},
		{"UndocumentedStatus", 418, jsonHeader("application/json"), status(""), false},
		{"UndocumentedContentType", 200, jsonHeader("text/html", etag...), []byte("<p>hi</p>"), false},
		{"ProblemAsJSON", 404, jsonHeader("application/json"), []byte(`{"code":"not_found"}`), false},
		{"ProblemWrongCode", 404, jsonHeader("application/problem+json"), []byte(`{"type":"https://mfaflow.dev/problems/conflict","title":"Not Found","status":404,"code":"conflict","instance":"/verification-srv/verificationstatus/` + id + `"}`), false},
		{"ProblemUnknownCode", 404, jsonHeader("application/problem+json"), []byte(`{"type":"https://mfaflow.dev/problems/gone","title":"Not Found","status":404,"code":"gone","instance":"/verification-srv/verificationstatus/` + id + `"}`), false},
		{"RetryAfterMissing", 429, jsonHeader("application/problem+json"), []byte(`{"type":"https://mfaflow.dev/problems/too_many_requests","title":"Too Many Requests","status":429,"code":"too_many_requests","instance":"/verification-srv/verificationstatus/` + id + `"}`), false},
		{"BodyOn304", 304, http.Header{"Cache-Control": {"no-store"}, "Etag": {etag[1]}}, status(""), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &apiComplaints{T: t}
			c.check(rec, apiExchange{
				Response: harness.Response{Status: tc.status, Header: tc.header, Body: tc.body},
				Method:   http.MethodGet, Template: statusTemplate, Path: "/verification-srv/verificationstatus/" + id,
			})
			if tc.ok && len(rec.errs) > 0 {
				t.Errorf("a faithful answer was reported: %q", rec.errs)
			}
			if !tc.ok && len(rec.errs) == 0 {
				t.Error("the drift was not reported")
			}
		})
	}
	// The SSE stream: each event's data is a Status.
	sse := func(data string) []byte {
		return []byte("retry: 2000\n\nid: 1\nevent: status\ndata: " + data + "\n\n: heartbeat\n\n")
	}
	for name, tc := range map[string]struct {
		body []byte
		ok   bool
	}{
		"Faithful":     {sse(string(status(""))), true},
		"BadData":      {sse(string(status(`,"x":1`))), false},
		"UnknownEvent": {bytes.Replace(sse(string(status(""))), []byte("event: status"), []byte("event: other"), 1), false},
		"Empty":        {[]byte(": heartbeat\n\n"), false},
	} {
		t.Run("SSE/"+name, func(t *testing.T) {
			rec := &apiComplaints{T: t}
			c.check(rec, apiExchange{
				Response: harness.Response{Status: 200, Header: jsonHeader("text/event-stream"), Body: tc.body},
				Method:   http.MethodGet, Template: statusTemplate + "/events", Path: "/verification-srv/verificationstatus/" + id + "/events",
			})
			if tc.ok != (len(rec.errs) == 0) {
				t.Errorf("ok=%v, complaints %q", tc.ok, rec.errs)
			}
		})
	}
}

// apiNotExercised lists operations neither TestOpenAPIMatchesResponses nor TestOpenAPISignIn
// answers with a documented success, each with the reason; every other documented operation
// must be. The live streams (SSE, status websocket) are exercised, on enrollments that are
// already terminal so that each stream ends by itself, and the companion bridge's handshake is
// checked (its frames are covered by the bridge's and the end-to-end tests).
var apiNotExercised = map[string]string{}

// TestOpenAPIMatchesResponses drives the real dev stack through every documented operation and
// many of their failures, and validates every answer against pkg/apidoc/openapi.json: status,
// content type, headers and body. Response schemas forbid undocumented fields, so a field the
// code adds without the document fails here.
func TestOpenAPIMatchesResponses(t *testing.T) {
	c := loadAPIContract(t)
	// Step-up is off: one user enrolls, removes and regenerates in a row here;
	// TestOpenAPISignIn validates the step-up answers.
	st := harness.Start(t, harness.Options{}, map[string]string{"MFA_STEP_UP": "off"})
	do, decode, problem := (&apiDriver{c: c, st: st}).do, decodeAPI, problemAPI
	const (
		tokenPath    = "/dev/token"
		methodsPath  = "/verification-srv/config/list"
		initiatePath = "/verification-srv/v2/setup/initiate/{type}"
		aliasPath    = "/verification-actions-srv/setup/{type}/initiation"
		enrollPath   = "/verification-srv/v2/setup/enroll/{type}"
		statusPath   = "/verification-srv/verificationstatus/{status_id}"
		eventsPath   = "/verification-srv/verificationstatus/{status_id}/events"
		wsPath       = "/verification-srv/verificationstatus/{status_id}/ws"
		devicesPath  = "/device-srv/devices"
		devicePath   = "/device-srv/devices/{ph_id}"
		bridgePath   = "/mobile-bridge/v1/connect"
	)
	tokenFor := func(t *testing.T, sub string) string {
		t.Helper()
		var out struct{ Token string }
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: tokenPath, Body: map[string]string{"sub": sub}}), http.StatusOK, &out)
		return out.Token
	}
	type initiated struct {
		ExchangeID struct {
			ExchangeID string `json:"exchange_id"`
		} `json:"exchange_id"`
		StatusID   string  `json:"status_id"`
		OTPAuthURI string  `json:"otpauth_uri"`
		QRCode     *string `json:"qr_code"`
	}
	start := func(t *testing.T, template, token, qr string) (initiated, apiExchange) {
		t.Helper()
		var in initiated
		x := do(t, apiRequest{Method: http.MethodPost, Template: template, Params: []string{"totp"}, Query: qr, Token: token})
		decode(t, x, http.StatusOK, &in)
		if got, want := x.Header.Get("Location"), "/verification-srv/verificationstatus/"+in.StatusID; got != want {
			t.Errorf("Location %q, want %q", got, want)
		}
		return in, x
	}
	type status struct {
		Status   string `json:"status"`
		DeviceID string `json:"device_id"`
		PHID     string `json:"ph_id"`
	}
	var s status

	alice := tokenFor(t, "openapi-alice")
	bob := tokenFor(t, "openapi-bob")

	t.Run("Meta", func(t *testing.T) {
		x := do(t, apiRequest{Method: http.MethodGet, Template: apidoc.Path})
		if x.Status != http.StatusOK {
			t.Errorf("GET %s: %d; is apidoc.Handler() wired in the dev stack?", apidoc.Path, x.Status)
		} else {
			if !bytes.Equal(x.Body, apidoc.Document) {
				t.Errorf("GET %s does not serve pkg/apidoc's document", apidoc.Path)
			}
			do(t, apiRequest{Method: http.MethodGet, Template: apidoc.Path, Header: []string{"If-None-Match", x.Header.Get("ETag")}})
		}
		var h struct{ Status string }
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: "/healthz"}), http.StatusOK, &h)
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: "/readyz"}), http.StatusOK, &h)
		if h.Status != "ready" {
			t.Errorf("/readyz status %q", h.Status)
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: "/metrics"}), http.StatusOK, nil)
	})

	t.Run("DemoPage", func(t *testing.T) {
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: "/"}), http.StatusOK, nil)
		for _, f := range []string{"app.js", "app.css", "favicon.svg"} {
			decode(t, do(t, apiRequest{Method: http.MethodGet, Template: "/static/{file}", Params: []string{f}}), http.StatusOK, nil)
		}
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: "/static/{file}", Params: []string{"nope.js"}}), 404, fault.NotFound)
	})

	t.Run("DevToken", func(t *testing.T) {
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: tokenPath, Body: map[string]string{"sub": " "}}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: tokenPath, Body: map[string]string{"sub": "x", "ttl": "48h"}}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: tokenPath, Body: "{"}), 400, fault.BadRequest)
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: tokenPath, Body: map[string]string{"sub": "x", "ttl": "5m"}}), 200, nil)
	})

	t.Run("Methods", func(t *testing.T) {
		var ms []struct{ VerificationType string }
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: methodsPath, Token: alice}), 200, &ms)
		if len(ms) == 0 || ms[0].VerificationType != "TOTP" {
			t.Errorf("methods %+v", ms)
		}
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: methodsPath}), 401, fault.Unauthorized)
	})

	// The main enrollment: PNG QR on the v2 route, typed code, then the device.
	in, _ := start(t, initiatePath, alice, "")
	t.Run("Initiate", func(t *testing.T) {
		if in.QRCode == nil || !strings.HasPrefix(*in.QRCode, "data:image/png;base64,") {
			t.Errorf("default qr_code is not a PNG data URI")
		}
		svg, _ := start(t, aliasPath, alice, "qr=svg")
		if svg.QRCode == nil || !strings.HasPrefix(*svg.QRCode, "<svg") {
			t.Errorf("qr=svg: qr_code is not SVG")
		}
		png, _ := start(t, aliasPath, alice, "qr=png")
		if png.QRCode == nil || !strings.HasPrefix(*png.QRCode, "data:image/png;base64,") {
			t.Errorf("qr=png: qr_code is not a PNG data URI")
		}
		none, _ := start(t, initiatePath, alice, "qr=none")
		if none.QRCode != nil {
			t.Errorf("qr=none: qr_code present")
		}
		// An optional body, as cidaas clients send it.
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"TOTP"}, Token: alice,
			Body: map[string]any{"deviceInfo": map[string]string{"deviceType": "browser"}}}), 200, nil)

		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"totp"}, Query: "qr=gif", Token: alice}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: aliasPath, Params: []string{"totp"}, Token: alice, Body: `{"deviceInfo":`}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: aliasPath, Params: []string{"totp"}, Token: alice, Body: `{"deviceInfo":7}`}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"fax"}, Token: alice}), 404, fault.NotFound)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: aliasPath, Params: []string{"totp"}}), 401, fault.Unauthorized)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"totp"}, Token: "not-a-jwt"}), 401, fault.Unauthorized)
	})

	t.Run("Poll", func(t *testing.T) {
		x := do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{in.StatusID}, Token: alice})
		decode(t, x, 200, &s)
		if s.Status != "INITIATED" {
			t.Errorf("status %s, want INITIATED", s.Status)
		}
		x = do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{in.StatusID}, Token: alice, Header: []string{"If-None-Match", x.Header.Get("ETag")}})
		decode(t, x, http.StatusNotModified, nil)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{in.StatusID}, Token: bob}), 404, fault.NotFound)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{"no-such-status"}, Token: alice}), 404, fault.NotFound)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{in.StatusID}}), 401, fault.Unauthorized)
	})

	t.Run("Enroll", func(t *testing.T) {
		u, err := url.Parse(in.OTPAuthURI)
		if err != nil {
			t.Fatal(err)
		}
		code, err := totp.Code(u.Query().Get("secret"), time.Now(), totp.Default)
		if err != nil {
			t.Fatal(err)
		}
		wrong := "000000"
		if code == wrong {
			wrong = "999999"
		}
		enroll := func(token string, body any, typ ...string) apiExchange {
			if len(typ) == 0 {
				typ = []string{"totp"}
			}
			return do(t, apiRequest{Method: http.MethodPost, Template: enrollPath, Params: typ, Token: token, Body: body})
		}
		ok := map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": code, "friendly_name": "Work phone"}

		problem(t, enroll(alice, map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": wrong}), 400, fault.InvalidCode)
		problem(t, enroll(alice, map[string]string{"exchange_id": in.ExchangeID.ExchangeID}), 400, fault.BadRequest)
		problem(t, enroll(alice, map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": "12ab"}), 400, fault.BadRequest)
		problem(t, enroll(alice, nil), 400, fault.BadRequest)
		problem(t, enroll(alice, map[string]string{"exchange_id": "no-such-exchange", "verification_code": code}), 404, fault.NotFound)
		problem(t, enroll(bob, ok), 404, fault.NotFound)
		problem(t, enroll(alice, ok, "fax"), 404, fault.NotFound)
		problem(t, enroll("", ok), 401, fault.Unauthorized)

		decode(t, enroll(alice, ok), 200, &s)
		if s.Status != "ENROLLED" || s.PHID == "" || s.DeviceID == "" {
			t.Fatalf("after enroll: %+v", s)
		}
		problem(t, enroll(alice, ok), 409, fault.Conflict) // finished: no more codes

		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{in.StatusID}, Token: alice}), 200, &s)
		if s.Status != "ENROLLED" {
			t.Errorf("poll after enroll: %s", s.Status)
		}
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: statusPath, Params: []string{in.StatusID}, Token: alice}), 409, fault.Conflict)
	})

	t.Run("Live", func(t *testing.T) {
		// Both streams end after a terminal state, so on an ENROLLED enrollment each answers
		// the one status object and finishes.
		x := do(t, apiRequest{Method: http.MethodGet, Template: eventsPath, Params: []string{in.StatusID}, Query: "access_token=" + url.QueryEscape(alice)})
		decode(t, x, 200, nil)
		if !bytes.Contains(x.Body, []byte(`"ENROLLED"`)) {
			t.Errorf("SSE: %s", x.Body)
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: eventsPath, Params: []string{in.StatusID}, Token: alice}), 200, nil)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: eventsPath, Params: []string{in.StatusID}}), 401, fault.Unauthorized)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: eventsPath, Params: []string{in.StatusID}, Token: bob}), 404, fault.NotFound)

		x = do(t, apiRequest{Method: http.MethodGet, Template: wsPath, Params: []string{in.StatusID}, Query: "access_token=" + url.QueryEscape(alice), Header: wsHandshake()})
		decode(t, x, http.StatusSwitchingProtocols, nil)
		if len(x.Messages) != 1 || !bytes.Contains(x.Messages[0], []byte(`"ENROLLED"`)) {
			t.Errorf("ws messages %q, want the ENROLLED status", x.Messages)
		}
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: wsPath, Params: []string{in.StatusID}, Header: wsHandshake()}), 401, fault.Unauthorized)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: wsPath, Params: []string{in.StatusID}, Token: bob, Header: wsHandshake()}), 404, fault.NotFound)
		// Authenticated, but not a websocket handshake.
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: wsPath, Params: []string{in.StatusID}, Token: alice}), 400, fault.BadRequest)
	})

	t.Run("Devices", func(t *testing.T) {
		var ds []struct {
			PHID         string `json:"ph_id"`
			FriendlyName string `json:"friendly_name"`
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: devicesPath, Token: alice}), 200, &ds)
		if len(ds) != 1 || ds[0].PHID != s.PHID || ds[0].FriendlyName != "Work phone" {
			t.Fatalf("devices %+v, want the enrolled one", ds)
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: devicesPath, Token: bob}), 200, &ds)
		if len(ds) != 0 {
			t.Errorf("bob sees %+v", ds)
		}
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: devicesPath}), 401, fault.Unauthorized)

		rename := func(token, phid string, body any) apiExchange {
			return do(t, apiRequest{Method: http.MethodPatch, Template: devicePath, Params: []string{phid}, Token: token, Body: body})
		}
		var d struct {
			FriendlyName string `json:"friendly_name"`
		}
		decode(t, rename(alice, s.PHID, map[string]string{"friendly_name": "Personal phone"}), 200, &d)
		if d.FriendlyName != "Personal phone" {
			t.Errorf("renamed to %q", d.FriendlyName)
		}
		problem(t, rename(alice, s.PHID, map[string]string{"friendly_name": "  "}), 400, fault.BadRequest)
		problem(t, rename(alice, s.PHID, map[string]string{}), 400, fault.BadRequest)
		problem(t, rename(alice, s.PHID, map[string]int{"friendly_name": 7}), 400, fault.BadRequest)
		problem(t, rename(alice, s.PHID, map[string]string{"friendly_name": strings.Repeat("x", 65)}), 400, fault.BadRequest)
		problem(t, rename(bob, s.PHID, map[string]string{"friendly_name": "mine"}), 404, fault.NotFound)
		problem(t, rename(alice, "no-such-device", map[string]string{"friendly_name": "x"}), 404, fault.NotFound)
		problem(t, rename("", s.PHID, map[string]string{"friendly_name": "x"}), 401, fault.Unauthorized)

		remove := func(token, phid string) apiExchange {
			return do(t, apiRequest{Method: http.MethodDelete, Template: devicePath, Params: []string{phid}, Token: token})
		}
		problem(t, remove(bob, s.PHID), 404, fault.NotFound)
		problem(t, remove("", s.PHID), 401, fault.Unauthorized)
		decode(t, remove(alice, s.PHID), http.StatusNoContent, nil)
		problem(t, remove(alice, s.PHID), 404, fault.NotFound)
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: devicesPath, Token: alice}), 200, &ds)
		if len(ds) != 0 {
			t.Errorf("devices after remove: %+v", ds)
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		other, _ := start(t, aliasPath, alice, "qr=none")
		cancel := func(token string) apiExchange {
			return do(t, apiRequest{Method: http.MethodDelete, Template: statusPath, Params: []string{other.StatusID}, Token: token})
		}
		problem(t, cancel(bob), 404, fault.NotFound)
		problem(t, cancel(""), 401, fault.Unauthorized)
		decode(t, cancel(alice), 200, &s)
		if s.Status != "CANCELLED" {
			t.Errorf("after cancel: %s", s.Status)
		}
		decode(t, cancel(alice), 200, nil) // idempotent
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: enrollPath, Params: []string{"totp"}, Token: alice,
			Body: map[string]string{"exchange_id": other.ExchangeID.ExchangeID, "verification_code": "123456"}}), 409, fault.Conflict)
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: statusPath, Params: []string{"no-such-status"}, Token: alice}), 404, fault.NotFound)
	})

	t.Run("PollTooFast", func(t *testing.T) {
		other, _ := start(t, initiatePath, alice, "qr=none")
		for range 50 {
			x := do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{other.StatusID}, Token: alice})
			if x.Status == http.StatusTooManyRequests {
				problem(t, x, 429, fault.TooManyRequests)
				return
			}
			decode(t, x, 200, nil)
		}
		t.Error("50 polls in a row were never limited; is MFA_POLL_RATE off?")
	})

	t.Run("Router", func(t *testing.T) {
		for _, p := range []string{"/nope", "/verification-srv/nope", "/device-srv/devices/a/b", "/verification-srv/verificationstatus/a/b/c"} {
			c.checkUnknownRoute(t, sendAPI(t, st, apiRequest{Method: http.MethodGet, Template: p, Token: alice}))
		}
		c.checkUnknownRoute(t, sendAPI(t, st, apiRequest{Method: http.MethodPost, Template: "/nope", Body: "{}"}))
		for _, r := range []apiRequest{
			{Method: http.MethodPut, Template: methodsPath},
			{Method: http.MethodGet, Template: enrollPath, Params: []string{"totp"}},
			{Method: http.MethodGet, Template: initiatePath, Params: []string{"totp"}},
			{Method: http.MethodPost, Template: statusPath, Params: []string{in.StatusID}},
			{Method: http.MethodDelete, Template: eventsPath, Params: []string{in.StatusID}},
			{Method: http.MethodPost, Template: devicesPath},
			{Method: http.MethodGet, Template: devicePath, Params: []string{"x"}},
			{Method: http.MethodPost, Template: bridgePath},
			{Method: http.MethodGet, Template: tokenPath},
			{Method: http.MethodDelete, Template: "/healthz"},
			{Method: http.MethodPost, Template: apidoc.Path},
			{Method: http.MethodPost, Template: "/"},
			{Method: http.MethodPut, Template: "/static/{file}", Params: []string{"app.js"}},
		} {
			r.Token = alice
			c.checkWrongMethod(t, sendAPI(t, st, r))
		}
	})

	t.Run("PasskeysInactive", func(t *testing.T) {
		// This stack's public URL is http://127.0.0.1:…, which cannot be an RP ID, and no
		// MFA_WEBAUTHN_RP_ID is set: WEBAUTHN is listed inactive and its routes answer 409.
		var listed []struct {
			VerificationType string `json:"verificationType"`
			Active           bool   `json:"active"`
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: methodsPath, Token: alice}), 200, &listed)
		if !slices.Contains(listed, struct {
			VerificationType string `json:"verificationType"`
			Active           bool   `json:"active"`
		}{"WEBAUTHN", false}) {
			t.Errorf("config/list %+v, want WEBAUTHN inactive", listed)
		}
		body := map[string]string{"exchange_id": "3f9b6a0e-5d2c-4e8f-9a71-0c6d2b8e4f13"}
		for _, template := range []string{initiatePath, aliasPath, enrollPath,
			"/verification-srv/authentication/{method}/initiation", "/verification-srv/authentication/{method}/verification"} {
			problem(t, do(t, apiRequest{Method: http.MethodPost, Template: template, Params: []string{"webauthn"}, Token: alice, Body: body}), 409, fault.MethodInactive)
		}
	})

	t.Run("TooLarge", func(t *testing.T) {
		huge := `{"sub":"` + strings.Repeat("x", 1<<20) + `"}`
		for _, r := range []apiRequest{
			{Method: http.MethodPost, Template: tokenPath},
			{Method: http.MethodPost, Template: initiatePath, Params: []string{"totp"}},
			{Method: http.MethodPost, Template: aliasPath, Params: []string{"totp"}},
			{Method: http.MethodPost, Template: enrollPath, Params: []string{"totp"}},
			{Method: http.MethodPatch, Template: devicePath, Params: []string{"x"}},
		} {
			r.Token, r.Body = alice, huge
			problem(t, do(t, r), 413, fault.PayloadTooLarge)
		}
	})

	t.Run("Bridge", func(t *testing.T) {
		// The bridge waits for the app to speak; the handshake is all that is checked here.
		x := do(t, apiRequest{Method: http.MethodGet, Template: bridgePath, Header: wsHandshake("Sec-WebSocket-Protocol", "mfa-bridge.v1"), Linger: 100 * time.Millisecond})
		decode(t, x, http.StatusSwitchingProtocols, nil)
		if got := x.Header.Get("Sec-WebSocket-Protocol"); got != "mfa-bridge.v1" {
			t.Errorf("sub-protocol %q, want mfa-bridge.v1", got)
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: bridgePath, Header: wsHandshake(), Linger: 100 * time.Millisecond}), http.StatusSwitchingProtocols, nil)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: bridgePath}), 400, fault.BadRequest)
	})

	t.Run("Expired", func(t *testing.T) {
		// A second stack whose enrollments expire at once: the SSE stream runs until the
		// expiry sweep moves the enrollment to EXPIRED, then 410 is what completing or
		// cancelling it answers.
		short := harness.Start(t, harness.Options{SweepInterval: 50 * time.Millisecond, Heartbeat: 200 * time.Millisecond}, map[string]string{"MFA_ENROLLMENT_TTL": "1s"})
		var out struct{ Token string }
		x := sendAPI(t, short, apiRequest{Method: http.MethodPost, Template: tokenPath, Body: map[string]string{"sub": "openapi-carol"}})
		c.check(t, x)
		decode(t, x, 200, &out)
		var e initiated
		x = sendAPI(t, short, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"totp"}, Query: "qr=none", Token: out.Token})
		c.check(t, x)
		decode(t, x, 200, &e)
		x = sendAPI(t, short, apiRequest{Method: http.MethodGet, Template: eventsPath, Params: []string{e.StatusID}, Token: out.Token})
		c.check(t, x)
		decode(t, x, 200, nil)
		if !bytes.Contains(x.Body, []byte(`"EXPIRED"`)) {
			t.Fatalf("SSE did not end with EXPIRED:\n%s", x.Body)
		}
		x = sendAPI(t, short, apiRequest{Method: http.MethodPost, Template: enrollPath, Params: []string{"totp"}, Token: out.Token,
			Body: map[string]string{"exchange_id": e.ExchangeID.ExchangeID, "verification_code": "123456"}})
		c.check(t, x)
		problem(t, x, 410, fault.Expired)
		x = sendAPI(t, short, apiRequest{Method: http.MethodDelete, Template: statusPath, Params: []string{e.StatusID}, Token: out.Token})
		c.check(t, x)
		problem(t, x, 410, fault.Expired)
	})

	// Every documented operation was answered with a documented success at least once.
	for _, key := range c.operationKeys() {
		if reason, skip := apiNotExercised[key]; skip {
			t.Logf("not exercised: %s (%s)", key, reason)
			continue
		}
		if apiSignInOperations[key] {
			continue // TestOpenAPISignIn checks these, on a stack with a test clock
		}
		success := false
		var got []int
		for code := range c.seen[key] {
			got = append(got, code)
			success = success || code/100 == 2 || code == http.StatusSwitchingProtocols
		}
		sort.Ints(got)
		if !success {
			t.Errorf("%s was never answered with a success (saw %v)", key, got)
		} else {
			t.Logf("%s: %v", key, got)
		}
	}
}

// walkDoc visits every member of every JSON object under v (p is v's JSON pointer), depth first,
// with the pointer of its object and its own; visit returns whether to descend into the member.
func walkDoc(v any, p string, visit func(parent, key string, child any, path string) bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, child := range obj {
		cp := jsonPtr(p, k)
		if visit(p, k, child, cp) {
			walkDoc(child, cp, visit)
		}
	}
}

// apiSignInOperations are the sign-in verification, JWKS, recovery-code, admin and MFA state
// operations.
// TestOpenAPISignIn exercises them on a stack with a test clock (so that it can move to the next
// TOTP step instead of waiting for it) and requires a documented success of each;
// TestOpenAPIMatchesResponses leaves them to it.
var apiSignInOperations = map[string]bool{
	"POST /verification-srv/authentication/{method}/initiation":   true,
	"POST /verification-srv/authentication/{method}/verification": true,
	"GET /.well-known/jwks.json":                                  true,
	"POST /verification-srv/backupcodes":                          true,
	"GET /verification-srv/backupcodes":                           true,
	"GET /verification-srv/admin/users/{sub}/lockout":             true,
	"DELETE /verification-srv/admin/users/{sub}/lockout":          true,
	"GET /verification-srv/admin/users/{sub}/factors":             true,
	"DELETE /verification-srv/admin/users/{sub}/factors":          true,
	"DELETE /verification-srv/admin/users/{sub}/factors/{ph_id}":  true,
	"POST /verification-srv/admin/secrets/rekey":                  true,
	"POST /verification-srv/authentication/{method}/resend":       true,
	"POST /verification-srv/v2/setup/resend/{type}":               true,
	"GET /verification-srv/mfa":                                   true,
	"PUT /verification-srv/mfa":                                   true,
	"POST /verification-srv/mfa/disable":                          true,
	"GET /verification-srv/admin/users/{sub}/mfa":                 true,
	"POST /verification-srv/mfa/disable/confirm":                  true,
}

// TestOpenAPISignIn drives sign-in verification through the real dev stack and validates every
// answer against the document: step-up with the user's own token and the identity-provider flow
// with a service token (scope mfa:verify), each refusal code (invalid_code, code_replayed, locked
// with Retry-After, no_factor, forbidden, conflict, expired), the AUTHENTICATED status object with
// its mfa_token (polled and live), the JWKS, recovery codes and the admin lockout routes. The
// mfa_token's payload is validated against MFATokenClaims and its signature against the JWKS.
// The single-step verification (a service sends sub and pass_code without an exchange), the
// user's MFA state, the default method and disabling MFA (by a fresh second factor, and the 202
// of the emailed link) are driven here too.
func TestOpenAPISignIn(t *testing.T) {
	c := loadAPIContract(t)
	// 10 s into a TOTP step, so ±1 step never straddles a boundary mid-test. The poll limiter
	// runs on the wall clock; it is off here (TestOpenAPIMatchesResponses covers it), and so is
	// the per-user initiation limit (alice starts more sign-ins than its burst).
	clock := testkit.NewClock(time.Unix(1_800_000_000/30*30+10, 0).UTC())
	st := harness.Start(t, harness.Options{Clock: clock.Now, SweepInterval: 50 * time.Millisecond},
		map[string]string{"MFA_LOCKOUT_THRESHOLD": "3", "MFA_POLL_RATE": "0", "MFA_USER_START_RATE": "0",
			// Passkeys work: an RP ID (the harness's 127.0.0.1 URL is none) and the origin the
			// virtual authenticator signs (passkey_test.go).
			"MFA_WEBAUTHN_RP_ID": "localhost", "MFA_WEBAUTHN_ORIGINS": passkeyOrigin})
	si := &signIn{Stack: st, clock: clock}
	do, decode, problem := (&apiDriver{c: c, st: st}).do, decodeAPI, problemAPI
	const (
		tokenPath      = "/dev/token"
		initiatePath   = "/verification-srv/v2/setup/initiate/{type}"
		enrollPath     = "/verification-srv/v2/setup/enroll/{type}"
		statusPath     = "/verification-srv/verificationstatus/{status_id}"
		eventsPath     = "/verification-srv/verificationstatus/{status_id}/events"
		wsPath         = "/verification-srv/verificationstatus/{status_id}/ws"
		authStartPath  = "/verification-srv/authentication/{method}/initiation"
		authCodePath   = "/verification-srv/authentication/{method}/verification"
		jwksPath       = "/.well-known/jwks.json"
		backupPath     = "/verification-srv/backupcodes"
		lockoutPath    = "/verification-srv/admin/users/{sub}/lockout"
		statePath      = "/verification-srv/mfa"
		disablePath    = "/verification-srv/mfa/disable"
		confirmPath    = "/verification-srv/mfa/disable/confirm"
		adminStatePath = "/verification-srv/admin/users/{sub}/mfa"
	)
	tokenFor := func(t *testing.T, sub, scope, clientID string) string {
		t.Helper()
		body := map[string]string{"sub": sub}
		if scope != "" {
			body["scope"] = scope
		}
		if clientID != "" {
			body["client_id"] = clientID
		}
		var out struct{ Token string }
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: tokenPath, Body: body}), http.StatusOK, &out)
		return out.Token
	}
	// enrollDevice enrolls a TOTP device for the token's user with a typed code; it returns the
	// secret and the code that enrolled it (spent: a sign-in refuses it as a replay).
	enrollDevice := func(t *testing.T, token string) (secret, used string) {
		t.Helper()
		var in struct {
			ExchangeID struct {
				ExchangeID string `json:"exchange_id"`
			} `json:"exchange_id"`
			TOTPSecret string `json:"totp_secret"`
		}
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"totp"}, Query: "qr=none", Token: token}), 200, &in)
		used = si.code(t, in.TOTPSecret)
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: enrollPath, Params: []string{"totp"}, Token: token,
			Body: map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": used}}), 200, nil)
		return in.TOTPSecret, used
	}
	type started struct {
		ExchangeID struct {
			ExchangeID string `json:"exchange_id"`
		} `json:"exchange_id"`
		StatusID string `json:"status_id"`
		Sub      string `json:"sub"`
	}
	startAuth := func(t *testing.T, token, method string, body any) started {
		t.Helper()
		var in started
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{method}, Token: token, Body: body}), 200, &in)
		return in
	}
	verify := func(t *testing.T, token, method, exchangeID, code string) apiExchange {
		t.Helper()
		return do(t, apiRequest{Method: http.MethodPost, Template: authCodePath, Params: []string{method}, Token: token,
			Body: map[string]string{"exchange_id": exchangeID, "pass_code": code}})
	}
	type result struct {
		Status   string `json:"status"`
		StatusID string `json:"status_id"`
		Sub      string `json:"sub"`
		Method   string `json:"method"`
		PHID     string `json:"ph_id"`
		MFAToken string `json:"mfa_token"`
	}
	type statusObj struct {
		Status   string `json:"status"`
		Type     string `json:"type"`
		PHID     string `json:"ph_id"`
		MFAToken string `json:"mfa_token"`
	}
	getStatus := func(t *testing.T, token, id string) statusObj {
		t.Helper()
		var s statusObj
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{id}, Token: token}), 200, &s)
		return s
	}
	// checkMFAToken validates the token's payload against MFATokenClaims and its signature with
	// a stock JWT library against the JWKS, for the audience a relying app expects.
	checkMFAToken := func(t *testing.T, tok, audience, amr string) {
		t.Helper()
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("mfa_token %q is not a compact JWS", tok)
		}
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatalf("mfa_token payload: %v", err)
		}
		c.validateJSON(t, "mfa_token payload", "#/components/schemas/MFATokenClaims", payload)
		claims := si.verifyMFAToken(t, tok, audience)
		if got := fmt.Sprint(claims["amr"]); got != amr {
			t.Errorf("mfa_token amr %s, want %s", got, amr)
		}
	}

	alice := tokenFor(t, "openapi-alice", "", "")
	bob := tokenFor(t, "openapi-bob", "", "")
	idp := tokenFor(t, "openapi-login-service", "openid mfa:verify", "shop-frontend")
	admin := tokenFor(t, "openapi-ops", "mfa:admin", "")
	secret, enrollCode := enrollDevice(t, alice)

	t.Run("JWKS", func(t *testing.T) {
		x := do(t, apiRequest{Method: http.MethodGet, Template: jwksPath})
		decode(t, x, 200, nil)
		if cc := x.Header.Get("Cache-Control"); cc != "public, max-age=300" {
			t.Errorf("JWKS Cache-Control %q", cc)
		}
		do(t, apiRequest{Method: http.MethodGet, Template: jwksPath, Token: "not-a-jwt"}) // no token needed, a bad one ignored
	})

	t.Run("InitiationRefused", func(t *testing.T) {
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}}), 401, fault.Unauthorized)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: "not-a-jwt"}), 401, fault.Unauthorized)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"fax"}, Token: alice}), 404, fault.NotFound)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: alice,
			Body: map[string]string{"usage_type": "PASSWORDLESS"}}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: idp,
			Body: map[string]string{"sub": strings.Repeat("x", 257)}}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: alice,
			Body: map[string]any{"context": map[string]string{"app": strings.Repeat("x", 257)}}}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: alice, Body: `{"context":7}`}), 400, fault.BadRequest)
		// A user token naming another sub.
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: bob,
			Body: map[string]string{"sub": "openapi-alice"}}), 403, fault.Forbidden)
		// No device; no recovery codes yet.
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: bob}), 409, fault.NoFactor)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"backupcode"}, Token: alice}), 409, fault.NoFactor)
	})

	var stepUp result
	t.Run("StepUp", func(t *testing.T) {
		in := startAuth(t, alice, "totp", map[string]string{"usage_type": "MULTIFACTOR_AUTHENTICATION"})
		startAuth(t, alice, "TOTP", nil) // case-insensitive, empty body
		if s := getStatus(t, alice, in.StatusID); s.Status != "INITIATED" || s.Type != "TOTP" {
			t.Errorf("status after initiation %+v", s)
		}
		x := in.ExchangeID.ExchangeID
		problem(t, verify(t, "", "totp", x, enrollCode), 401, fault.Unauthorized)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authCodePath, Params: []string{"totp"}, Token: alice,
			Body: map[string]string{"exchange_id": x}}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authCodePath, Params: []string{"totp"}, Token: alice, Body: "{"}), 400, fault.BadRequest)
		problem(t, verify(t, alice, "fax", x, enrollCode), 404, fault.NotFound)
		problem(t, verify(t, alice, "totp", "no-such-exchange", enrollCode), 404, fault.NotFound)
		problem(t, verify(t, bob, "totp", x, enrollCode), 404, fault.NotFound)
		// The code that enrolled the device is spent; so is nothing else yet.
		problem(t, verify(t, alice, "totp", x, enrollCode), 400, fault.CodeReplayed)
		si.nextStep()
		code := si.code(t, secret)
		problem(t, verify(t, alice, "totp", x, wrongCode(code)), 400, fault.InvalidCode) // Rackspace-style: retry the same exchange
		problem(t, verify(t, alice, "totp", x, "12345"), 400, fault.InvalidCode)
		decode(t, verify(t, alice, "totp", x, code), 200, &stepUp)
		if stepUp.Status != "AUTHENTICATED" || stepUp.Method != "TOTP" || stepUp.PHID == "" || stepUp.StatusID != in.StatusID {
			t.Fatalf("verification %+v", stepUp)
		}
		checkMFAToken(t, stepUp.MFAToken, "openapi-alice", "[otp]")
		problem(t, verify(t, alice, "totp", x, code), 409, fault.Conflict)
		if s := getStatus(t, alice, in.StatusID); s.Status != "AUTHENTICATED" || s.MFAToken == "" || s.PHID != stepUp.PHID {
			t.Errorf("poll after verification %+v", s)
		}
		// Live status of an authentication: terminal, so each stream answers it once and ends.
		ev := do(t, apiRequest{Method: http.MethodGet, Template: eventsPath, Params: []string{in.StatusID}, Query: "access_token=" + url.QueryEscape(alice)})
		decode(t, ev, 200, nil)
		if !bytes.Contains(ev.Body, []byte(`"AUTHENTICATED"`)) {
			t.Errorf("SSE: %s", ev.Body)
		}
		ws := do(t, apiRequest{Method: http.MethodGet, Template: wsPath, Params: []string{in.StatusID}, Token: alice, Header: wsHandshake()})
		decode(t, ws, http.StatusSwitchingProtocols, nil)
		if len(ws.Messages) != 1 || !bytes.Contains(ws.Messages[0], []byte(`"mfa_token"`)) {
			t.Errorf("ws messages %q, want the AUTHENTICATED status with its mfa_token", ws.Messages)
		}
		// A new authentication refuses the used code; cancelling ends it.
		again := startAuth(t, alice, "totp", nil)
		problem(t, verify(t, alice, "totp", again.ExchangeID.ExchangeID, code), 400, fault.CodeReplayed)
		var cancelled statusObj
		decode(t, do(t, apiRequest{Method: http.MethodDelete, Template: statusPath, Params: []string{again.StatusID}, Token: alice}), 200, &cancelled)
		if cancelled.Status != "CANCELLED" {
			t.Errorf("cancel %+v", cancelled)
		}
		problem(t, verify(t, alice, "totp", again.ExchangeID.ExchangeID, code), 409, fault.Conflict)
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: statusPath, Params: []string{in.StatusID}, Token: alice}), 409, fault.Conflict)
	})

	t.Run("IdentityProvider", func(t *testing.T) {
		in := startAuth(t, idp, "totp", map[string]any{
			"usage_type": "MULTIFACTOR_AUTHENTICATION", "sub": "openapi-alice",
			"context": map[string]string{"app": "shop", "ip": "203.0.113.7", "user_agent": "Firefox", "other": "dropped"},
		})
		if in.Sub != "openapi-alice" {
			t.Fatalf("initiation %+v", in)
		}
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: idp,
			Body: map[string]string{"sub": "openapi-nobody"}}), 409, fault.NoFactor)
		si.nextStep()
		code := si.code(t, secret)
		problem(t, verify(t, idp, "totp", in.ExchangeID.ExchangeID, wrongCode(code)), 400, fault.InvalidCode)
		var res result
		decode(t, verify(t, idp, "totp", in.ExchangeID.ExchangeID, code), 200, &res)
		checkMFAToken(t, res.MFAToken, "shop-frontend", "[otp]")
		if s := getStatus(t, idp, in.StatusID); s.MFAToken == "" {
			t.Errorf("the initiator's poll has no mfa_token: %+v", s)
		}
		// The login service's sign-in is its own: the user gets 404.
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: statusPath, Params: []string{in.StatusID}, Token: alice}), 404, fault.NotFound)
	})

	t.Run("RecoveryCodes", func(t *testing.T) {
		var rs struct {
			Remaining int        `json:"remaining"`
			CreatedAt *time.Time `json:"created_at"`
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: backupPath, Token: alice}), 200, &rs)
		if rs.Remaining != 0 || rs.CreatedAt != nil {
			t.Errorf("before generating: %+v", rs)
		}
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: backupPath}), 401, fault.Unauthorized)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: backupPath}), 401, fault.Unauthorized)
		// alice has a device: a new set needs step-up, from a STEP_UP sign-in of her own.
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: backupPath, Token: alice}), 403, fault.StepUpRequired)
		si.nextStep()
		stepUp := startAuth(t, alice, "totp", map[string]string{"usage_type": "STEP_UP"})
		var proof result
		decode(t, verify(t, alice, "totp", stepUp.ExchangeID.ExchangeID, si.code(t, secret)), 200, &proof)
		var set struct{ Codes []string }
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: backupPath, Token: alice, Header: []string{"X-MFA-Token", proof.MFAToken}}), 201, &set)
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: backupPath, Token: alice}), 200, &rs)
		if rs.Remaining != len(set.Codes) || rs.CreatedAt == nil {
			t.Errorf("after generating: %+v", rs)
		}
		in := startAuth(t, alice, "backupcode", nil)
		problem(t, verify(t, alice, "totp", in.ExchangeID.ExchangeID, set.Codes[1]), 409, fault.Conflict) // the other method
		problem(t, verify(t, alice, "backupcode", in.ExchangeID.ExchangeID, "not-a-code"), 400, fault.InvalidCode)
		var res result
		decode(t, verify(t, alice, "backupcode", in.ExchangeID.ExchangeID, strings.ToLower(set.Codes[0])), 200, &res)
		if res.Method != "BACKUPCODE" || res.PHID != "" {
			t.Errorf("recovery-code sign-in %+v", res)
		}
		checkMFAToken(t, res.MFAToken, "openapi-alice", "[kba]")
		if s := getStatus(t, alice, in.StatusID); s.Type != "BACKUPCODE" || s.Status != "AUTHENTICATED" {
			t.Errorf("status %+v", s)
		}
		again := startAuth(t, alice, "backupcode", nil)
		problem(t, verify(t, alice, "backupcode", again.ExchangeID.ExchangeID, set.Codes[0]), 400, fault.CodeReplayed)
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: backupPath, Token: alice}), 200, &rs)
		if rs.Remaining != len(set.Codes)-1 {
			t.Errorf("remaining %d", rs.Remaining)
		}
	})

	t.Run("SingleStep", func(t *testing.T) {
		once := func(token, method string, body any) apiExchange {
			return do(t, apiRequest{Method: http.MethodPost, Template: authCodePath, Params: []string{method}, Token: token, Body: body})
		}
		si.nextStep()
		code := si.code(t, secret)
		var res result
		decode(t, once(idp, "totp", map[string]string{"sub": "openapi-alice", "pass_code": code}), 200, &res)
		if res.Status != "AUTHENTICATED" || res.Sub != "openapi-alice" || res.Method != "TOTP" || res.PHID == "" {
			t.Errorf("single step %+v", res)
		}
		checkMFAToken(t, res.MFAToken, "shop-frontend", "[otp]")
		if s := getStatus(t, idp, res.StatusID); s.Status != "AUTHENTICATED" {
			t.Errorf("status of a single-step sign-in %+v", s)
		}
		problem(t, once(idp, "totp", map[string]string{"sub": "openapi-alice", "pass_code": code}), 400, fault.CodeReplayed)
		problem(t, once(alice, "totp", map[string]string{"sub": "openapi-alice", "pass_code": code}), 403, fault.Forbidden)
		problem(t, once(idp, "email", map[string]string{"sub": "openapi-alice", "pass_code": "123456"}), 400, fault.BadRequest)
		problem(t, once(idp, "totp", map[string]string{"pass_code": "123456"}), 400, fault.BadRequest)
		problem(t, once(idp, "totp", map[string]string{"sub": "openapi-alice"}), 400, fault.BadRequest)
		problem(t, once(idp, "totp", map[string]string{"sub": "openapi-bob", "pass_code": "123456"}), 409, fault.NoFactor)
	})

	t.Run("MFAState", func(t *testing.T) {
		var tok struct{ Token string }
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: tokenPath,
			Body: map[string]string{"sub": "openapi-erin", "email": "erin@example.org", "locale": "de"}}), http.StatusOK, &tok)
		erin := tok.Token
		frank := tokenFor(t, "openapi-frank", "", "")
		type state struct {
			Enabled       bool       `json:"enabled"`
			Methods       []string   `json:"methods"`
			DefaultMethod string     `json:"default_method"`
			Contact       string     `json:"contact"`
			LockedUntil   *time.Time `json:"locked_until"`
		}
		var st state
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: statePath, Token: erin}), 200, &st)
		if st.Enabled || len(st.Methods) != 0 || st.Contact != "e***@example.org" {
			t.Errorf("state before any factor %+v", st)
		}
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: statePath}), 401, fault.Unauthorized)
		setDefault := func(token string, body any) apiExchange {
			return do(t, apiRequest{Method: http.MethodPut, Template: statePath, Token: token, Body: body})
		}
		problem(t, setDefault(erin, map[string]string{"default_method": "TOTP"}), 409, fault.NoFactor)
		problem(t, setDefault(erin, map[string]string{"default_method": "FAX"}), 400, fault.BadRequest)
		problem(t, setDefault(erin, nil), 400, fault.BadRequest)
		problem(t, setDefault("", map[string]string{"default_method": "TOTP"}), 401, fault.Unauthorized)
		enrollDevice(t, erin)
		decode(t, setDefault(erin, map[string]string{"default_method": "totp"}), 200, &st)
		if !st.Enabled || st.DefaultMethod != "TOTP" || len(st.Methods) != 1 {
			t.Errorf("state with a device %+v", st)
		}

		adminState := func(token, sub string) apiExchange {
			return do(t, apiRequest{Method: http.MethodGet, Template: adminStatePath, Params: []string{sub}, Token: token})
		}
		decode(t, adminState(admin, "openapi-erin"), 200, &st)
		if !st.Enabled || st.Contact != "e***@example.org" {
			t.Errorf("admin view %+v", st)
		}
		decode(t, adminState(admin, "openapi-nobody"), 200, nil)
		problem(t, adminState(erin, "openapi-erin"), 403, fault.Forbidden)
		problem(t, adminState("", "openapi-erin"), 401, fault.Unauthorized)
		problem(t, adminState(admin, strings.Repeat("x", 257)), 400, fault.BadRequest)

		// Disabling without a fresh second factor mails a link; without an address it cannot.
		disable := func(token string, header ...string) apiExchange {
			return do(t, apiRequest{Method: http.MethodPost, Template: disablePath, Token: token, Header: header})
		}
		decode(t, disable(frank), 200, nil) // no factor: nothing to disable, no mail
		si.enrollDevice(t, frank)
		problem(t, disable(frank), 409, fault.NoContact)
		problem(t, disable(""), 401, fault.Unauthorized)
		var pending struct {
			Confirmation string    `json:"confirmation"`
			ExpiresAt    time.Time `json:"expires_at"`
		}
		decode(t, disable(erin), 202, &pending)
		if want := clock.Now().Add(15 * time.Minute).Truncate(time.Second); pending.Confirmation != "email" || !pending.ExpiresAt.Equal(want) {
			t.Errorf("disable by link %+v, want expires_at %v", pending, want)
		}
		confirm := func(token string, body any) apiExchange {
			return do(t, apiRequest{Method: http.MethodPost, Template: confirmPath, Token: token, Body: body})
		}
		problem(t, confirm(erin, map[string]string{"token": "not-the-links-token"}), 410, fault.Expired)
		problem(t, confirm(erin, map[string]string{}), 400, fault.BadRequest)
		problem(t, confirm("", map[string]string{"token": "x"}), 401, fault.Unauthorized)
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: statePath, Token: erin}), 200, &st)
		if !st.Enabled {
			t.Errorf("MFA is off before the link was used: %+v", st)
		}
		// The link's token, from the mail the notifier delivered to the dev inbox (in German:
		// erin's locale is de, so the link is what is looked for, not the subject).
		var linkTok string
		natstest.Eventually(t, 15*time.Second, func() error {
			for _, m := range si.inbox(t, "erin@example.org") {
				if mm := linkToken.FindStringSubmatch(m.Text); mm != nil {
					var err error
					linkTok, err = url.QueryUnescape(mm[1])
					return err
				}
			}
			return fmt.Errorf("no disable link to erin@example.org yet")
		})
		problem(t, confirm(frank, map[string]string{"token": linkTok}), 410, fault.Expired) // another user's
		st = state{}
		decode(t, confirm(erin, map[string]string{"token": linkTok}), 200, &st)
		if st.Enabled || len(st.Methods) != 0 {
			t.Errorf("state after confirming the link %+v", st)
		}
		problem(t, confirm(erin, map[string]string{"token": linkTok}), 410, fault.Expired) // once
		si.nextStep()
		erinSecret, _ := enrollDevice(t, erin) // a factor again, for disabling at once

		// With a fresh second factor: at once; a bad proof changes nothing.
		problem(t, disable(erin, "X-MFA-Token", "not-a-jwt"), 403, fault.StepUpRequired)
		si.nextStep()
		up := startAuth(t, erin, "totp", map[string]string{"usage_type": "STEP_UP"})
		var proof result
		decode(t, verify(t, erin, "totp", up.ExchangeID.ExchangeID, si.code(t, erinSecret)), 200, &proof)
		st = state{} // absent fields must not keep the last answer's values
		decode(t, disable(erin, "X-MFA-Token", proof.MFAToken), 200, &st)
		if st.Enabled || len(st.Methods) != 0 || st.DefaultMethod != "" {
			t.Errorf("state after disabling %+v", st)
		}
	})

	t.Run("Passkeys", func(t *testing.T) {
		type passkeyAnswer struct {
			ExchangeID struct {
				ExchangeID string `json:"exchange_id"`
			} `json:"exchange_id"`
			StatusID  string          `json:"status_id"`
			Type      string          `json:"type"`
			PublicKey json.RawMessage `json:"public_key"`
		}
		initiate := func(t *testing.T, token string, body any, header ...string) (passkeyAnswer, vw.AttestationOptions) {
			t.Helper()
			var in passkeyAnswer
			decode(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"webauthn"}, Token: token, Body: body, Header: header}), 200, &in)
			opts, err := vw.ParseAttestationOptions(string(in.PublicKey))
			if err != nil || in.Type != "WEBAUTHN" {
				t.Fatalf("creation options %+v: %v", in, err)
			}
			return in, *opts
		}
		enroll := func(token string, body any) apiExchange {
			return do(t, apiRequest{Method: http.MethodPost, Template: enrollPath, Params: []string{"webauthn"}, Token: token, Body: body})
		}
		cred := func(exchangeID, credential string) map[string]any {
			return map[string]any{"exchange_id": exchangeID, "credential": json.RawMessage(credential)}
		}
		signIn := func(t *testing.T, token string, body any) (passkeyAnswer, vw.AssertionOptions) {
			t.Helper()
			var in passkeyAnswer
			decode(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"webauthn"}, Token: token, Body: body}), 200, &in)
			opts, err := vw.ParseAssertionOptions(string(in.PublicKey))
			if err != nil {
				t.Fatalf("request options %s: %v", in.PublicKey, err)
			}
			return in, *opts
		}
		assert := func(token, exchangeID, credential string) apiExchange {
			return do(t, apiRequest{Method: http.MethodPost, Template: authCodePath, Params: []string{"webauthn"}, Token: token, Body: cred(exchangeID, credential)})
		}
		evil := vw.RelyingParty{ID: "localhost", Origin: "https://evil.example"}

		// Enrollment: refusals leave it open, the right response enrolls, once.
		gina := tokenFor(t, "openapi-gina", "", "")
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"webauthn"}, Token: gina}), 409, fault.NoFactor)
		in, options := initiate(t, gina, map[string]string{"friendly_name": "Laptop"})
		auth, key := vw.NewAuthenticatorWithOptions(vw.AuthenticatorOptions{BackupEligible: true, BackupState: true}), vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey())
		x := in.ExchangeID.ExchangeID
		problem(t, enroll(gina, map[string]string{"exchange_id": x}), 400, fault.BadRequest)
		problem(t, enroll(gina, map[string]string{"exchange_id": x, "verification_code": "123456"}), 400, fault.BadRequest)
		problem(t, enroll(gina, cred(x, vw.CreateAttestationResponse(evil, auth, key, options))), 400, fault.InvalidCredential)
		problem(t, enroll(gina, cred(x, tamper(t, vw.CreateAttestationResponse(passkeyRP, auth, key, options), "clientDataJSON"))), 400, fault.InvalidCredential)
		problem(t, enroll(bob, cred(x, vw.CreateAttestationResponse(passkeyRP, auth, key, options))), 404, fault.NotFound)
		right := vw.CreateAttestationResponse(passkeyRP, auth, key, options)
		var enrolled statusObj
		decode(t, enroll(gina, cred(x, right)), 200, &enrolled)
		if enrolled.Status != "ENROLLED" || enrolled.Type != "WEBAUTHN" || enrolled.PHID == "" {
			t.Fatalf("passkey enrollment %+v", enrolled)
		}
		auth.AddCredential(key)
		problem(t, enroll(gina, cred(x, right)), 400, fault.InvalidCredential) // the challenge is spent
		if s := getStatus(t, gina, in.StatusID); s.Status != "ENROLLED" || s.Type != "WEBAUTHN" {
			t.Errorf("status of the passkey enrollment %+v", s)
		}
		var devices []struct {
			PHID         string `json:"ph_id"`
			Type         string `json:"type"`
			FriendlyName string `json:"friendly_name"`
			BackedUp     *bool  `json:"backed_up"`
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: "/device-srv/devices", Token: gina}), 200, &devices)
		if len(devices) != 1 || devices[0].Type != "WEBAUTHN" || devices[0].FriendlyName != "Laptop" || devices[0].BackedUp == nil || !*devices[0].BackedUp {
			t.Errorf("device list %+v", devices)
		}

		// Sign-in: amr hwk and user (the virtual authenticator verifies the user by default).
		up, reqOpts := signIn(t, gina, map[string]string{"usage_type": "STEP_UP"})
		if len(reqOpts.AllowCredentials) != 1 {
			t.Errorf("allowCredentials %v", reqOpts.AllowCredentials)
		}
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authCodePath, Params: []string{"webauthn"}, Token: gina,
			Body: map[string]string{"exchange_id": up.ExchangeID.ExchangeID}}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authCodePath, Params: []string{"webauthn"}, Token: gina,
			Body: map[string]string{"exchange_id": up.ExchangeID.ExchangeID, "pass_code": "123456"}}), 400, fault.BadRequest)
		problem(t, assert(gina, up.ExchangeID.ExchangeID, vw.CreateAssertionResponse(evil, auth, key, reqOpts)), 400, fault.InvalidCredential)
		problem(t, assert(bob, up.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, key, reqOpts)), 404, fault.NotFound)
		assertion := vw.CreateAssertionResponse(passkeyRP, auth, key, reqOpts)
		var res result
		decode(t, assert(gina, up.ExchangeID.ExchangeID, assertion), 200, &res)
		if res.Status != "AUTHENTICATED" || res.Method != "WEBAUTHN" || res.PHID != enrolled.PHID {
			t.Fatalf("passkey sign-in %+v", res)
		}
		checkMFAToken(t, res.MFAToken, "openapi-gina", "[hwk user]")
		problem(t, assert(gina, up.ExchangeID.ExchangeID, assertion), 400, fault.InvalidCredential) // spent
		if s := getStatus(t, gina, up.StatusID); s.Status != "AUTHENTICATED" || s.Type != "WEBAUTHN" || s.PHID != enrolled.PHID {
			t.Errorf("status of the passkey sign-in %+v", s)
		}

		// A second passkey needs step-up; the passkey sign-in gives it.
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"webauthn"}, Token: gina}), 403, fault.StepUpRequired)
		_, second := initiate(t, gina, nil, "X-MFA-Token", res.MFAToken)
		if len(second.ExcludeCredentials) != 1 {
			t.Errorf("excludeCredentials %v, want the passkey enrolled", second.ExcludeCredentials)
		}

		// A counter that goes backwards: refused (cloned_authenticator in the event).
		key.Counter = 10
		in2, reqOpts := signIn(t, gina, nil)
		decode(t, assert(gina, in2.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, key, reqOpts)), 200, nil)
		key.Counter = 3
		in3, reqOpts := signIn(t, gina, nil)
		problem(t, assert(gina, in3.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, auth, key, reqOpts)), 400, fault.InvalidCredential)

		// Without user verification: hwk only. Refused assertions lock (threshold 3).
		hank := tokenFor(t, "openapi-hank", "", "")
		hin, hopts := initiate(t, hank, nil)
		hauth, hkey := vw.NewAuthenticatorWithOptions(vw.AuthenticatorOptions{UserNotVerified: true}), vw.NewCredentialWithImportedKey(vw.KeyTypeEC2, testkit.PasskeyKey())
		decode(t, enroll(hank, cred(hin.ExchangeID.ExchangeID, vw.CreateAttestationResponse(passkeyRP, hauth, hkey, hopts))), 200, nil)
		hauth.AddCredential(hkey)
		hs, hreq := signIn(t, hank, nil)
		decode(t, assert(hank, hs.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, hauth, hkey, hreq)), 200, &res)
		checkMFAToken(t, res.MFAToken, "openapi-hank", "[hwk]")
		hs, hreq = signIn(t, hank, nil)
		problem(t, assert(hank, hs.ExchangeID.ExchangeID, vw.CreateAssertionResponse(evil, hauth, hkey, hreq)), 400, fault.InvalidCredential)
		problem(t, assert(hank, hs.ExchangeID.ExchangeID, tamper(t, vw.CreateAssertionResponse(passkeyRP, hauth, hkey, hreq), "signature")), 400, fault.InvalidCredential)
		problem(t, assert(hank, hs.ExchangeID.ExchangeID, vw.CreateAssertionResponse(evil, hauth, hkey, hreq)), 429, fault.Locked)
		problem(t, assert(hank, hs.ExchangeID.ExchangeID, vw.CreateAssertionResponse(passkeyRP, hauth, hkey, hreq)), 429, fault.Locked)
		decode(t, do(t, apiRequest{Method: http.MethodDelete, Template: lockoutPath, Params: []string{"openapi-hank"}, Token: admin}), 204, nil)
	})

	t.Run("Lockout", func(t *testing.T) {
		carol := tokenFor(t, "openapi-carol", "", "")
		carolSecret, _ := enrollDevice(t, carol)
		var l struct {
			Locked         bool       `json:"locked"`
			LockedUntil    *time.Time `json:"locked_until"`
			FailedAttempts int        `json:"failed_attempts"`
		}
		lock := func(token, sub string) apiExchange {
			return do(t, apiRequest{Method: http.MethodGet, Template: lockoutPath, Params: []string{sub}, Token: token})
		}
		unlock := func(token, sub string) apiExchange {
			return do(t, apiRequest{Method: http.MethodDelete, Template: lockoutPath, Params: []string{sub}, Token: token})
		}
		decode(t, lock(admin, "openapi-nobody"), 200, &l)
		if l.Locked || l.FailedAttempts != 0 {
			t.Errorf("lockout of a user without mistakes %+v", l)
		}
		si.nextStep()
		right := si.code(t, carolSecret)
		in := startAuth(t, carol, "totp", nil)
		problem(t, verify(t, carol, "totp", in.ExchangeID.ExchangeID, wrongCode(right)), 400, fault.InvalidCode)
		problem(t, verify(t, carol, "totp", in.ExchangeID.ExchangeID, wrongCode(right)), 400, fault.InvalidCode)
		x := verify(t, carol, "totp", in.ExchangeID.ExchangeID, wrongCode(right))
		problem(t, x, 429, fault.Locked)
		if ra := x.Header.Get("Retry-After"); ra != "60" {
			t.Errorf("Retry-After %q, want 60", ra)
		}
		problem(t, verify(t, carol, "totp", in.ExchangeID.ExchangeID, right), 429, fault.Locked) // a right code too
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: carol}), 429, fault.Locked)

		decode(t, lock(admin, "openapi-carol"), 200, &l)
		if !l.Locked || l.LockedUntil == nil {
			t.Errorf("lockout %+v, want locked", l)
		}
		var locked struct {
			LockedUntil *time.Time `json:"locked_until"`
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: adminStatePath, Params: []string{"openapi-carol"}, Token: admin}), 200, &locked)
		if locked.LockedUntil == nil || !locked.LockedUntil.Equal(*l.LockedUntil) {
			t.Errorf("MFA state of a locked user: locked_until %v, want %v", locked.LockedUntil, l.LockedUntil)
		}
		problem(t, lock(carol, "openapi-carol"), 403, fault.Forbidden)
		problem(t, lock(idp, "openapi-carol"), 403, fault.Forbidden)
		problem(t, lock("", "openapi-carol"), 401, fault.Unauthorized)
		problem(t, lock(admin, strings.Repeat("x", 257)), 400, fault.BadRequest)
		problem(t, unlock(carol, "openapi-carol"), 403, fault.Forbidden)
		problem(t, unlock("", "openapi-carol"), 401, fault.Unauthorized)
		problem(t, unlock(admin, strings.Repeat("x", 257)), 400, fault.BadRequest)
		decode(t, unlock(admin, "openapi-carol"), 204, nil)
		decode(t, unlock(admin, "openapi-carol"), 204, nil) // not locked: nothing changes
		l.LockedUntil = nil
		decode(t, lock(admin, "openapi-carol"), 200, &l)
		if l.Locked || l.LockedUntil != nil || l.FailedAttempts != 0 {
			t.Errorf("lockout after unlock %+v", l)
		}
		var res result
		decode(t, verify(t, carol, "totp", in.ExchangeID.ExchangeID, right), 200, &res)

		// The factors routes: list, remove one, reset all.
		const factorsPath, factorPath = "/verification-srv/admin/users/{sub}/factors", "/verification-srv/admin/users/{sub}/factors/{ph_id}"
		var f struct {
			Devices []struct {
				PHID string `json:"ph_id"`
			} `json:"devices"`
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: factorsPath, Params: []string{"openapi-carol"}, Token: admin}), 200, &f)
		if len(f.Devices) != 1 {
			t.Fatalf("factors of openapi-carol %+v", f)
		}
		decode(t, do(t, apiRequest{Method: http.MethodGet, Template: factorsPath, Params: []string{"openapi-nobody"}, Token: admin}), 200, nil)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: factorsPath, Params: []string{"openapi-carol"}, Token: carol}), 403, fault.Forbidden)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: factorsPath, Params: []string{"openapi-carol"}}), 401, fault.Unauthorized)
		problem(t, do(t, apiRequest{Method: http.MethodGet, Template: factorsPath, Params: []string{strings.Repeat("x", 257)}, Token: admin}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: factorPath, Params: []string{"openapi-nobody", f.Devices[0].PHID}, Token: admin}), 404, fault.NotFound)
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: factorPath, Params: []string{"openapi-carol", f.Devices[0].PHID}, Token: carol}), 403, fault.Forbidden)
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: factorsPath, Params: []string{"openapi-carol"}, Token: carol}), 403, fault.Forbidden)
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: factorsPath, Params: []string{"openapi-carol"}}), 401, fault.Unauthorized)
		decode(t, do(t, apiRequest{Method: http.MethodDelete, Template: factorPath, Params: []string{"openapi-carol", f.Devices[0].PHID}, Token: admin}), 204, nil)
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: factorPath, Params: []string{"openapi-carol", f.Devices[0].PHID}, Token: admin}), 404, fault.NotFound)
		decode(t, do(t, apiRequest{Method: http.MethodDelete, Template: factorsPath, Params: []string{"openapi-carol"}, Token: admin}), 204, nil)
		decode(t, do(t, apiRequest{Method: http.MethodDelete, Template: factorsPath, Params: []string{"openapi-carol"}, Token: admin}), 204, nil)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}, Token: carol}), 409, fault.NoFactor)

		// Secret-key rotation, one page at a time.
		const rekeyPath = "/verification-srv/admin/secrets/rekey"
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: rekeyPath, Token: admin, Body: `{"limit":1}`}), 200, nil)
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: rekeyPath, Token: admin}), 200, nil)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: rekeyPath, Token: carol}), 403, fault.Forbidden)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: rekeyPath, Token: admin, Body: `{"limit":5000}`}), 400, fault.BadRequest)
	})

	t.Run("Expired", func(t *testing.T) {
		in := startAuth(t, alice, "totp", nil)
		clock.Advance(5*time.Minute + time.Second)
		if s := getStatus(t, alice, in.StatusID); s.Status != "EXPIRED" {
			t.Errorf("status after MFA_VERIFICATION_TTL %+v", s)
		}
		problem(t, verify(t, alice, "totp", in.ExchangeID.ExchangeID, si.code(t, secret)), 410, fault.Expired)
		problem(t, do(t, apiRequest{Method: http.MethodDelete, Template: statusPath, Params: []string{in.StatusID}, Token: alice}), 410, fault.Expired)
		// Past the mfa_token's lifetime the status object no longer carries one.
		if s := getStatus(t, alice, stepUp.StatusID); s.Status != "AUTHENTICATED" || s.MFAToken != "" {
			t.Errorf("status 5 minutes after sign-in %+v, want no mfa_token", s)
		}
	})

	t.Run("CodesByEmailAndSMS", func(t *testing.T) {
		const (
			enrollResendPath = "/verification-srv/v2/setup/resend/{type}"
			authResendPath   = "/verification-srv/authentication/{method}/resend"
		)
		dana := tokenFor(t, "openapi-dana", "", "")
		var in struct {
			ExchangeID struct {
				ExchangeID string `json:"exchange_id"`
			} `json:"exchange_id"`
			StatusID string `json:"status_id"`
		}
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"email"}, Token: dana,
			Body: map[string]string{"email": "not an address"}}), 400, fault.BadRequest)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"sms"}, Token: dana,
			Body: map[string]string{"phone": "0151 12345678"}}), 400, fault.BadRequest) // national without a region
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"email"}, Token: dana,
			Body: map[string]string{"email": "dana@example.org"}}), 200, &in)
		code := si.nextCode(t, "dana@example.org", 0)
		resend := func(template, typ, token, exchangeID string) apiExchange {
			return do(t, apiRequest{Method: http.MethodPost, Template: template, Params: []string{typ}, Token: token,
				Body: map[string]string{"exchange_id": exchangeID}})
		}
		problem(t, resend(enrollResendPath, "email", dana, in.ExchangeID.ExchangeID), 429, fault.TooManyRequests)
		problem(t, resend(enrollResendPath, "totp", dana, in.ExchangeID.ExchangeID), 404, fault.NotFound)
		problem(t, resend(enrollResendPath, "sms", dana, in.ExchangeID.ExchangeID), 409, fault.Conflict)
		problem(t, resend(enrollResendPath, "email", bob, in.ExchangeID.ExchangeID), 404, fault.NotFound)
		problem(t, resend(enrollResendPath, "email", dana, "no-such-exchange"), 404, fault.NotFound)
		clock.Advance(31 * time.Second)
		decode(t, resend(enrollResendPath, "email", dana, in.ExchangeID.ExchangeID), 202, nil)
		if again := si.nextCode(t, "dana@example.org", 1); again != code {
			problem(t, do(t, apiRequest{Method: http.MethodPost, Template: enrollPath, Params: []string{"email"}, Token: dana,
				Body: map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": code}}), 400, fault.InvalidCode)
			code = again
		}
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: enrollPath, Params: []string{"sms"}, Token: dana,
			Body: map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": code}}), 409, fault.Conflict)
		var enrolled statusObj
		decode(t, do(t, apiRequest{Method: http.MethodPost, Template: enrollPath, Params: []string{"email"}, Token: dana,
			Body: map[string]string{"exchange_id": in.ExchangeID.ExchangeID, "verification_code": code}}), 200, &enrolled)
		if enrolled.Status != "ENROLLED" || enrolled.Type != "EMAIL" {
			t.Fatalf("enrolled %+v", enrolled)
		}
		// The same address again is already enrolled (step-up first: dana has a factor now).
		auth := startAuth(t, dana, "email", map[string]string{"ph_id": enrolled.PHID})
		signInCode := si.nextCode(t, "dana@example.org", 2)
		problem(t, resend(authResendPath, "email", dana, auth.ExchangeID.ExchangeID), 429, fault.TooManyRequests)
		problem(t, resend(authResendPath, "totp", dana, auth.ExchangeID.ExchangeID), 404, fault.NotFound)
		clock.Advance(31 * time.Second)
		decode(t, resend(authResendPath, "email", dana, auth.ExchangeID.ExchangeID), 202, nil)
		if again := si.nextCode(t, "dana@example.org", 3); again != signInCode {
			problem(t, verify(t, dana, "email", auth.ExchangeID.ExchangeID, signInCode), 400, fault.InvalidCode)
			signInCode = again
		}
		var res result
		decode(t, verify(t, dana, "email", auth.ExchangeID.ExchangeID, signInCode), 200, &res)
		checkMFAToken(t, res.MFAToken, "openapi-dana", "[otp email]")
		problem(t, resend(authResendPath, "email", dana, auth.ExchangeID.ExchangeID), 409, fault.Conflict)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: initiatePath, Params: []string{"email"}, Token: dana,
			Body: map[string]string{"email": "DANA@example.org"}, Header: []string{"X-MFA-Token", res.MFAToken}}), 409, fault.AlreadyEnrolled)
		problem(t, do(t, apiRequest{Method: http.MethodPost, Template: authStartPath, Params: []string{"sms"}, Token: dana}), 409, fault.NoFactor)
	})

	t.Run("Router", func(t *testing.T) {
		for _, r := range []apiRequest{
			{Method: http.MethodGet, Template: authStartPath, Params: []string{"totp"}},
			{Method: http.MethodPut, Template: authCodePath, Params: []string{"totp"}},
			{Method: http.MethodPost, Template: jwksPath},
			{Method: http.MethodDelete, Template: backupPath},
			{Method: http.MethodPost, Template: lockoutPath, Params: []string{"openapi-carol"}},
			{Method: http.MethodDelete, Template: statePath},
			{Method: http.MethodGet, Template: disablePath},
			{Method: http.MethodGet, Template: confirmPath},
			{Method: http.MethodPut, Template: adminStatePath, Params: []string{"openapi-carol"}},
		} {
			r.Token = admin
			c.checkWrongMethod(t, sendAPI(t, st, r))
		}
		huge := `{"sub":"` + strings.Repeat("x", 1<<20) + `"}`
		for _, r := range []apiRequest{
			{Method: http.MethodPost, Template: authStartPath, Params: []string{"totp"}},
			{Method: http.MethodPost, Template: authCodePath, Params: []string{"totp"}},
			{Method: http.MethodPut, Template: statePath},
			{Method: http.MethodPost, Template: confirmPath},
		} {
			r.Token, r.Body = alice, huge
			problem(t, do(t, r), 413, fault.PayloadTooLarge)
		}
	})

	for key := range apiSignInOperations {
		if _, ok := c.at(jsonPtr("#/paths", strings.SplitN(key, " ", 2)[1], strings.ToLower(strings.SplitN(key, " ", 2)[0]))); !ok {
			t.Errorf("%s is not documented", key)
			continue
		}
		var got []int
		success := false
		for code := range c.seen[key] {
			got = append(got, code)
			success = success || code/100 == 2
		}
		sort.Ints(got)
		if !success {
			t.Errorf("%s was never answered with a success (saw %v)", key, got)
		} else {
			t.Logf("%s: %v", key, got)
		}
	}
}
