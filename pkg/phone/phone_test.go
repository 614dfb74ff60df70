package phone_test

import (
	"testing"

	"github.com/mfaflow/mfaflow/pkg/phone"
)

func TestParse(t *testing.T) {
	for _, c := range []struct{ text, region, e164, inRegion string }{
		{"+49 151 12345678", "", "+4915112345678", "DE"},
		{"0151 12345678", "de", "+4915112345678", "DE"},
		{"(030) 123456-78", "DE", "+493012345678", "DE"},
		{"+1 415-555-2671", "", "+14155552671", "US"},
		{"+43 664 1234567", "DE", "+436641234567", "AT"}, // international wins over the region
	} {
		n, err := phone.Parse(c.text, c.region)
		if err != nil || n.E164 != c.e164 || n.Region != c.inRegion {
			t.Errorf("Parse(%q, %q) = %+v, %v; want %s in %s", c.text, c.region, n, err, c.e164, c.inRegion)
		}
	}
	for _, c := range []struct{ text, region string }{
		{"0151 12345678", ""}, {"12", "DE"}, {"+49 1", ""}, {"not a number", "DE"}, {"", "DE"},
		{"+999 123456789", ""},
	} {
		if n, err := phone.Parse(c.text, c.region); err == nil {
			t.Errorf("Parse(%q, %q) = %+v, want an error", c.text, c.region, n)
		}
	}
}

func TestMask(t *testing.T) {
	for in, want := range map[string]string{
		"+4915112345678": "+49 ••• •••••• 78",
		"+14155552671":   "+1 ••• ••••• 71",
		"garbage":        "•••",
	} {
		if got := phone.Mask(in); got != want {
			t.Errorf("Mask(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAllowedRegion(t *testing.T) {
	if !phone.AllowedRegion("DE", nil) || !phone.AllowedRegion("de", []string{"AT", "DE"}) || phone.AllowedRegion("US", []string{"DE"}) {
		t.Error("AllowedRegion")
	}
}
