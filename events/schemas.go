package events

import "embed"

// Schemas holds the JSON Schemas (draft 2020-12) of the catalogue: one file per event type,
// describing the whole CloudEvent envelope, named SchemaFile(t) and identified by SchemaURI(t),
// plus defs.json (identified by DefsSchemaURI) with the payload shapes they share.
//
//go:embed schemas/*.json
var Schemas embed.FS

// DefsSchemaFile is the path in Schemas of the shared payload definitions.
const DefsSchemaFile = "schemas/defs.json"

// DefsSchemaURI is the $id of DefsSchemaFile, which the per-type schemas reference.
const DefsSchemaURI = "https://mfaflow.dev/events/schemas/defs.json"

// SchemaFile is the path in Schemas of the schema of events of type t; its $id is SchemaURI(t).
func SchemaFile(t Type) string { return "schemas/" + string(t) + ".json" }
