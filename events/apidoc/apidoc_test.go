package apidoc_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/events/apidoc"
)

// The schemas themselves are compiled and checked against real responses by the end-to-end
// test in tests/openapi_test.go; this package stays free of a JSON Schema dependency, so these
// tests check the document's structure only.

func mustDoc(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(apidoc.Document))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if dec.More() {
		t.Fatal("openapi.json has data after the document")
	}
	return doc
}

// pointer resolves a JSON pointer fragment ("#/a/b~1c") inside doc.
func pointer(doc any, ref string) (any, bool) {
	frag, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, false
	}
	cur := doc
	if frag == "" {
		return cur, true
	}
	if !strings.HasPrefix(frag, "/") {
		return nil, false
	}
	for tok := range strings.SplitSeq(frag[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := cur.(type) {
		case map[string]any:
			if cur, ok = v[tok]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(v) {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// walk calls fn for every object in v, with its JSON pointer.
func walk(v any, at string, fn func(at string, obj map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(at, v)
		for k, c := range v {
			walk(c, at+"/"+strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1"), fn)
		}
	case []any:
		for i, c := range v {
			walk(c, at+"/"+strconv.Itoa(i), fn)
		}
	}
}

// deref follows $ref (local only) until it reaches an object without one.
func deref(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	for range 10 {
		obj, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%v is not an object", v)
		}
		ref, ok := obj["$ref"].(string)
		if !ok {
			return obj
		}
		if v, ok = pointer(doc, ref); !ok {
			t.Fatalf("$ref %s does not resolve", ref)
		}
	}
	t.Fatal("$ref chain too long")
	return nil
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operations returns every operation keyed "METHOD /path".
func operations(t *testing.T, doc map[string]any) map[string]map[string]any {
	t.Helper()
	paths, ok := doc["paths"].(map[string]any)
	if !ok || len(paths) == 0 {
		t.Fatal("no paths")
	}
	ops := map[string]map[string]any{}
	for path, item := range paths {
		for k, v := range item.(map[string]any) {
			if slices.Contains(methods, k) {
				ops[strings.ToUpper(k)+" "+path] = v.(map[string]any)
			}
		}
	}
	return ops
}

func TestDocument(t *testing.T) {
	doc := mustDoc(t)
	if got := doc["openapi"]; got != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", got)
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] != "mfaflow" || info["version"] != "0.1.0" {
		t.Errorf("info = %v %v, want mfaflow 0.1.0", info["title"], info["version"])
	}
	for _, must := range []string{"Bearer", "problem+json", "access_token", "Retry-After", "/events", "mfa:verify", "mfa:admin", "mfa_token", "jwks.json", "locked"} {
		if d, _ := info["description"].(string); !strings.Contains(d, must) {
			t.Errorf("info.description does not mention %s", must)
		}
	}
	scheme, ok := pointer(doc, "#/components/securitySchemes/bearerAuth")
	if s, _ := scheme.(map[string]any); !ok || s["type"] != "http" || s["scheme"] != "bearer" || s["bearerFormat"] != "JWT" {
		t.Errorf("bearerAuth = %v, want http bearer JWT", scheme)
	}
}

func TestRefsResolve(t *testing.T) {
	doc := mustDoc(t)
	n := 0
	walk(doc, "#", func(at string, obj map[string]any) {
		ref, ok := obj["$ref"]
		if !ok {
			return
		}
		n++
		s, isString := ref.(string)
		if !isString || !strings.HasPrefix(s, "#/") {
			t.Errorf("%s: $ref %v is not a local JSON pointer", at, ref)
			return
		}
		if _, ok := pointer(doc, s); !ok {
			t.Errorf("%s: $ref %s does not resolve", at, s)
		}
	})
	if n == 0 {
		t.Fatal("no $ref at all")
	}
}

func TestOperations(t *testing.T) {
	doc := mustDoc(t)
	tags := map[string]bool{}
	for _, tg := range doc["tags"].([]any) {
		tags[tg.(map[string]any)["name"].(string)] = true
	}
	ids := map[string]string{}
	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	for key, op := range operations(t, doc) {
		t.Run(key, func(t *testing.T) {
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Error("no operationId")
			} else if other, dup := ids[id]; dup {
				t.Errorf("operationId %s also used by %s", id, other)
			}
			ids[id] = key
			for _, f := range []string{"summary", "description"} {
				if s, _ := op[f].(string); s == "" {
					t.Errorf("no %s", f)
				}
			}
			opTags, _ := op["tags"].([]any)
			if len(opTags) == 0 {
				t.Error("no tags")
			}
			for _, tg := range opTags {
				if !tags[tg.(string)] {
					t.Errorf("tag %v is not declared", tg)
				}
			}

			// Every {param} of the path is declared, on the operation or its path item.
			path := strings.SplitN(key, " ", 2)[1]
			declared := map[string]bool{}
			item := doc["paths"].(map[string]any)[path].(map[string]any)
			for _, list := range []any{item["parameters"], op["parameters"]} {
				ps, _ := list.([]any)
				for _, p := range ps {
					p := deref(t, doc, p)
					if p["in"] == "path" {
						if p["required"] != true {
							t.Errorf("path parameter %v is not required", p["name"])
						}
						declared[p["name"].(string)] = true
					}
				}
			}
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("path parameter %s is not declared", m[1])
				}
			}

			responses, _ := op["responses"].(map[string]any)
			success := false
			for code, r := range responses {
				status, err := strconv.Atoi(code)
				if err != nil {
					t.Errorf("response %q is not a status code", code)
					continue
				}
				// A WebSocket upgrade succeeds with 101 Switching Protocols.
				if status/100 == 2 || status == http.StatusSwitchingProtocols {
					success = true
				}
				r := deref(t, doc, r)
				if d, _ := r["description"].(string); d == "" {
					t.Errorf("response %s has no description", code)
				}
				if status < 400 {
					continue
				}
				content, _ := r["content"].(map[string]any)
				media, ok := content["application/problem+json"].(map[string]any)
				if len(content) != 1 || !ok {
					t.Errorf("response %s: content %v, want only application/problem+json", code, content)
					continue
				}
				schema, _ := media["schema"].(map[string]any)
				if schema["$ref"] != "#/components/schemas/Problem" {
					t.Errorf("response %s: schema %v does not reference Problem", code, schema)
				}
				if c, ok := pointer(schema, "#/properties/status/const"); !ok || c != float64(status) {
					t.Errorf("response %s: schema pins status to %v", code, c)
				}
			}
			if !success {
				t.Error("no success response")
			}
		})
	}
}

// TestResponseSchemasAreClosed: response bodies forbid undocumented fields, so the end-to-end
// validation notices a field the code adds without the document.
func TestResponseSchemasAreClosed(t *testing.T) {
	doc := mustDoc(t)
	open := map[string]bool{
		// Request bodies: the server ignores unknown fields, so the schemas must allow them.
		"InitiateRequest": true, "EnrollRequest": true, "RenameRequest": true, "TokenRequest": true,
		"AuthInitiationRequest": true, "AuthVerificationRequest": true, "ResendRequest": true,
		"DefaultMethodRequest": true, "DisableConfirmRequest": true,
		// The browser's credential is sent as it is; go-webauthn reads what it knows of it.
		"WebAuthnCredential": true,
		// The document itself grows with every route.
		"OpenAPIDocument": true,
	}
	schemas, _ := pointer(doc, "#/components/schemas")
	for name, s := range schemas.(map[string]any) {
		s := s.(map[string]any)
		if s["type"] != "object" || open[name] {
			continue
		}
		if s["additionalProperties"] != false {
			t.Errorf("schema %s allows additional properties", name)
		}
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(apidoc.Handler())
	t.Cleanup(srv.Close)
	get := func(t *testing.T, header ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+apidoc.Path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(resp.Body); err != nil {
			t.Fatal(err)
		}
		return resp, buf.Bytes()
	}

	resp, body := get(t)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, apidoc.Document) {
		t.Fatalf("GET: %d, %d bytes; want 200 and the document", resp.StatusCode, len(body))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	tag := resp.Header.Get("ETag")
	if !regexp.MustCompile(`^"[0-9a-f]{64}"$`).MatchString(tag) {
		t.Fatalf("ETag %q", tag)
	}

	for name, match := range map[string]string{
		"OK":   tag,
		"Weak": "W/" + tag,
		"List": `"other", ` + tag,
		"Star": "*",
	} {
		t.Run("NotModified/"+name, func(t *testing.T) {
			resp, body := get(t, "If-None-Match", match)
			if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
				t.Fatalf("status %d with %d bytes, want 304 and no body", resp.StatusCode, len(body))
			}
			if resp.Header.Get("ETag") != tag || resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v", resp.Header)
			}
		})
	}
	t.Run("Stale", func(t *testing.T) {
		if resp, _ := get(t, "If-None-Match", `"stale"`); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	})
}
