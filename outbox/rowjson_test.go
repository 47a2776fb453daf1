package outbox

import (
	"encoding/json"
	"testing"
	"time"
)

func TestRow_JSON(t *testing.T) {
	t.Parallel()
	cet := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		row  *Row
		want string
	}{
		{"nil row is SQL null", nil, ""},
		{"tombstone", &Row{ID: "u", DeletedAt: someTime(time.Date(2024, 1, 2, 4, 4, 5, 6000, cet)), RawJSON: []byte(`{"id": "u", "deleted": true}`)},
			`{"id":"u","name":null,"email":null,"created_at":null,"updated_at":null,"deleted_at":"2024-01-02T03:04:05.000006Z","raw_json":{"id":"u","deleted":true}}`},
		{"full row, no HTML escaping", &Row{
			ID: "u", Name: someString("A & B <x>"), Email: someString("a@b.c"),
			CreatedAt: someTime(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)),
			UpdatedAt: someTime(time.Date(2024, 1, 1, 0, 0, 0, 123456000, time.UTC)),
			RawJSON:   []byte(`{"n":1}`),
		}, `{"id":"u","name":"A & B <x>","email":"a@b.c","created_at":"2024-01-01T00:00:00.000000Z","updated_at":"2024-01-01T00:00:00.123456Z","deleted_at":null,"raw_json":{"n":1}}`},
		{"empty raw_json is null", &Row{ID: "u"},
			`{"id":"u","name":null,"email":null,"created_at":null,"updated_at":null,"deleted_at":null,"raw_json":null}`},
		{"invalid raw_json kept as a string", &Row{ID: "u", RawJSON: []byte(`{oops`)},
			`{"id":"u","name":null,"email":null,"created_at":null,"updated_at":null,"deleted_at":null,"raw_json":"{oops"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.row.JSON()
			if string(got) != tt.want {
				t.Fatalf("JSON() = %s\nwant     %s", got, tt.want)
			}
			if tt.row == nil || !json.Valid(tt.row.RawJSON) {
				return
			}
			var back Row
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatalf("read back: %v", err)
			}
			if !RowsEqual(&back, tt.row) {
				t.Errorf("read back %s, want %s", back.JSON(), got)
			}
		})
	}
}

func TestRowsEqual(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	base := Row{ID: "u", Name: someString("n"), CreatedAt: &at, RawJSON: []byte(`{"a":1,"b":[1,2]}`)}
	with := func(f func(*Row)) *Row { r := base; f(&r); return &r }
	tests := []struct {
		name string
		a, b *Row
		want bool
	}{
		{"both nil", nil, nil, true},
		{"one nil", &base, nil, false},
		{"same", &base, with(func(*Row) {}), true},
		{"same instant in another zone", &base, with(func(r *Row) { r.CreatedAt = someTime(at.In(time.FixedZone("X", 7200))) }), true},
		{"raw_json key order and spacing", &base, with(func(r *Row) { r.RawJSON = []byte(` { "b" : [1, 2], "a": 1.0 }`) }), true},
		{"raw_json differs", &base, with(func(r *Row) { r.RawJSON = []byte(`{"a":1,"b":[2,1]}`) }), false},
		{"id differs", &base, with(func(r *Row) { r.ID = "v" }), false},
		{"name nil vs set", &base, with(func(r *Row) { r.Name = nil }), false},
		{"name differs", &base, with(func(r *Row) { r.Name = someString("m") }), false},
		{"email set vs nil", &base, with(func(r *Row) { r.Email = someString("e") }), false},
		{"created_at differs", &base, with(func(r *Row) { r.CreatedAt = someTime(at.Add(time.Microsecond)) }), false},
		{"updated_at set vs nil", &base, with(func(r *Row) { r.UpdatedAt = &at }), false},
		{"deleted_at set vs nil", &base, with(func(r *Row) { r.DeletedAt = &at }), false},
		{"empty raw_json equals null", &Row{ID: "u"}, &Row{ID: "u", RawJSON: []byte("null")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := RowsEqual(tt.a, tt.b); got != tt.want {
				t.Errorf("RowsEqual = %v, want %v", got, tt.want)
			}
			if got := RowsEqual(tt.b, tt.a); got != tt.want {
				t.Errorf("RowsEqual (swapped) = %v, want %v", got, tt.want)
			}
		})
	}
}
