package outbox

import (
	"fmt"
	"strings"
	"time"
)

// adapter maps one provider's user object to the fold's model.
type adapter struct {
	// eventTime finds the provider's own event time; nil when the body has none.
	eventTime func(d *decoder) (*time.Time, error)
	// profile maps a user.created or user.updated user object.
	profile func(d *decoder) (Profile, error)
}

// adapters holds an adapter for each provider checkNames accepts.
var adapters = map[string]adapter{
	ProviderClerk:   {eventTime: clerkEventTime, profile: clerkProfile},
	ProviderStack:   {eventTime: stackEventTime, profile: stackProfile},
	ProviderWorkOS:  {eventTime: workosEventTime, profile: workosProfile},
	ProviderGeneric: {eventTime: genericEventTime, profile: genericProfile},
}

// clerkEventTime is the envelope's "timestamp", else the user's "updated_at".
func clerkEventTime(d *decoder) (*time.Time, error) {
	if d.env != nil {
		if t, err := d.millis(*d.env, "timestamp"); t != nil || err != nil {
			return t, err
		}
	}
	return d.millis(d.user, "updated_at")
}

// clerkProfile maps a Clerk UserJSON.
func clerkProfile(d *decoder) (Profile, error) {
	var p Profile
	var err error
	if p.Name, err = clerkName(d); err != nil {
		return Profile{}, err
	}
	if p.Email, err = clerkEmail(d); err != nil {
		return Profile{}, err
	}
	if p.CreatedAt, err = d.millis(d.user, "created_at"); err != nil {
		return Profile{}, err
	}
	if p.UpdatedAt, err = d.millis(d.user, "updated_at"); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// clerkName is the first and last name, else the username for users who
// sign up without a name.
func clerkName(d *decoder) (*string, error) {
	name, err := firstLastName(d)
	if name != nil || err != nil {
		return name, err
	}
	u, err := d.str(d.user, "username")
	if err != nil || u == nil || *u == "" {
		return nil, err
	}
	return u, nil
}

// firstLastName joins the trimmed "first_name" and "last_name" that are not
// empty with one space; nil when both are empty or absent.
func firstLastName(d *decoder) (*string, error) {
	var parts []string
	for _, key := range []string{"first_name", "last_name"} {
		s, err := d.str(d.user, key)
		if err != nil {
			return nil, err
		}
		if s != nil && strings.TrimSpace(*s) != "" {
			parts = append(parts, strings.TrimSpace(*s))
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	name := strings.Join(parts, " ")
	return &name, nil
}

// clerkEmail picks the address whose id is primary_email_address_id, else the
// first address: Clerk lists every address the user has, verified or not.
func clerkEmail(d *decoder) (*string, error) {
	v := d.user.m.at("email_addresses")
	if k := kind(v); k == "absent" || k == "null" {
		return nil, nil
	}
	list, ok := objectList(v)
	if !ok {
		return nil, d.badField(d.user, "email_addresses", v, "want an array of email address objects")
	}
	if len(list) == 0 {
		return nil, nil
	}
	primary, err := d.str(d.user, "primary_email_address_id")
	if err != nil {
		return nil, err
	}
	chosen := 0
	for i, entry := range list {
		var id string
		if primary != nil && unquote(entry.at("id"), &id) && id == *primary {
			chosen = i
			break
		}
	}
	loc := fmt.Sprintf(`in "email_addresses"[%d] %s`, chosen, d.user.loc)
	return d.str(members{m: list[chosen], loc: loc}, "email_address")
}

// stackEventTime is always nil: Stack Auth's body carries no event time, so
// whoever inserts the row should set occurred_at.
func stackEventTime(*decoder) (*time.Time, error) { return nil, nil }

// stackProfile maps a Stack Auth usersCrudServerReadSchema object. It has no
// update time, so the profile's updated_at becomes the event's occurred_at.
func stackProfile(d *decoder) (Profile, error) {
	var p Profile
	var err error
	if p.Name, err = d.str(d.user, "display_name"); err != nil {
		return Profile{}, err
	}
	if p.Email, err = d.str(d.user, "primary_email"); err != nil {
		return Profile{}, err
	}
	if p.CreatedAt, err = d.millis(d.user, "signed_up_at_millis"); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// workosEventTime is the envelope's "created_at" (the event's time), else
// the user's "updated_at". Inside "data", "created_at" is the user's creation
// time, so the two are read from different objects.
func workosEventTime(d *decoder) (*time.Time, error) {
	if d.env != nil {
		if t, err := d.isoTime(*d.env, "created_at"); t != nil || err != nil {
			return t, err
		}
	}
	return d.isoTime(d.user, "updated_at")
}

// workosProfile maps a WorkOS User Management user object, as the list-users
// API and the user.* events carry it (workos-node UserResponse in
// src/user-management/interfaces/user.interface.ts; workos-go
// pkg/usermanagement User): {object, id, email, email_verified,
// first_name, last_name, profile_picture_url, last_sign_in_at, created_at,
// updated_at}, times as ISO 8601 strings. WorkOS has no username, so the name
// is null when both names are empty.
func workosProfile(d *decoder) (Profile, error) {
	var p Profile
	var err error
	if p.Name, err = firstLastName(d); err != nil {
		return Profile{}, err
	}
	if p.Email, err = d.str(d.user, "email"); err != nil {
		return Profile{}, err
	}
	if p.CreatedAt, err = d.isoTime(d.user, "created_at"); err != nil {
		return Profile{}, err
	}
	if p.UpdatedAt, err = d.isoTime(d.user, "updated_at"); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// genericEventTime is the envelope's "timestamp", else the user's "updated_at".
func genericEventTime(d *decoder) (*time.Time, error) {
	if d.env != nil {
		if t, err := d.anyTime(*d.env, "timestamp"); t != nil || err != nil {
			return t, err
		}
	}
	return d.anyTime(d.user, "updated_at")
}

// genericProfile maps {"id", "name", "email", "created_at", "updated_at"}.
func genericProfile(d *decoder) (Profile, error) {
	var p Profile
	var err error
	if p.Name, err = d.str(d.user, "name"); err != nil {
		return Profile{}, err
	}
	if p.Email, err = d.str(d.user, "email"); err != nil {
		return Profile{}, err
	}
	if p.CreatedAt, err = d.anyTime(d.user, "created_at"); err != nil {
		return Profile{}, err
	}
	if p.UpdatedAt, err = d.anyTime(d.user, "updated_at"); err != nil {
		return Profile{}, err
	}
	return p, nil
}
