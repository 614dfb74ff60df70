// Package phone reads the phone numbers users give for the SMS factor: national or
// international spellings become E.164 (+4915112345678), with the region (ISO 3166 alpha-2) the
// number belongs to, and are masked for answers and events. It wraps nyaruka/phonenumbers (a
// port of Google's libphonenumber), whose metadata knows every region's numbering plan.
package phone

import (
	"errors"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// ErrInvalid: the text is not a valid phone number (for the region, when it is national).
var ErrInvalid = errors.New("not a valid phone number")

// Number is a valid phone number.
type Number struct {
	E164   string // +4915112345678
	Region string // DE
	// CountryCode is the calling code (49).
	CountryCode int
}

// Parse reads text: in international form (+49 151 …), or national (0151 …) with region (an
// ISO 3166 alpha-2 code such as DE). Spaces, dashes, dots and brackets are allowed.
func Parse(text, region string) (Number, error) {
	text = strings.TrimSpace(text)
	region = strings.ToUpper(strings.TrimSpace(region))
	if text == "" || len(text) > 40 {
		return Number{}, ErrInvalid
	}
	if !strings.HasPrefix(text, "+") && region == "" {
		return Number{}, errors.New("a national number needs its region (e.g. \"region\":\"DE\"), or write it in E.164 (+49…)")
	}
	if region == "" {
		region = "ZZ" // unknown: the number must carry its country code
	}
	n, err := phonenumbers.Parse(text, region)
	if err != nil || !phonenumbers.IsValidNumber(n) {
		return Number{}, ErrInvalid
	}
	return Number{
		E164:        phonenumbers.Format(n, phonenumbers.E164),
		Region:      phonenumbers.GetRegionCodeForNumber(n),
		CountryCode: int(n.GetCountryCode()),
	}, nil
}

// Mask shows a number's country code and last two digits, the rest as dots in two groups:
// +49 ••• •••••••• 78 becomes, for +4915112345678, "+49 ••• •••••• 78".
func (n Number) Mask() string { return Mask(n.E164) }

// Mask masks an E.164 number (see Number.Mask); text that is not one is masked whole.
func Mask(e164 string) string {
	p, err := phonenumbers.Parse(e164, "ZZ")
	if err != nil || !strings.HasPrefix(e164, "+") {
		return "•••"
	}
	cc := strings.TrimPrefix(e164, "+")
	national := phonenumbers.GetNationalSignificantNumber(p)
	cc = cc[:len(cc)-len(national)]
	if len(national) < 4 {
		return "+" + cc + " •••"
	}
	hidden := len(national) - 2
	first := min(3, hidden/2)
	return "+" + cc + " " + strings.Repeat("•", first) + " " + strings.Repeat("•", hidden-first) + " " + national[len(national)-2:]
}

// AllowedRegion reports whether region is in allowed (upper-case region codes); an empty list
// allows every region.
func AllowedRegion(region string, allowed []string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		if strings.EqualFold(a, region) {
			return true
		}
	}
	return false
}
