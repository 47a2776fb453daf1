package pgtest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDatabaseName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ test, wantPrefix string }{
		{"TestFoo", "t_testfoo_"},
		{"TestFoo/sub case#01", "t_testfoo_sub_case_01_"},
		{"Test--Ünïcode", "t_test_n_code_"},
		{strings.Repeat("TestLong", 20), "t_testlongtestlong"},
	} {
		got := databaseName(tc.test)
		if !strings.HasPrefix(got, tc.wantPrefix) || len(got) > maxIdentifier || strings.Contains(got, "__"+runTag) {
			t.Errorf("databaseName(%q) = %q, want a prefix %q and at most %d bytes", tc.test, got, tc.wantPrefix, maxIdentifier)
		}
		if again := databaseName(tc.test); again == got {
			t.Errorf("databaseName(%q) returned %q twice", tc.test, got)
		}
	}
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ base, want string }{
		{"postgres://u:p@h:5/old?sslmode=disable", "postgres://u:p@h:5/t_x?sslmode=disable"},
		{"postgresql://h/", "postgresql://h/t_x"},
		{"host=h dbname=old", "host=h dbname=old dbname=t_x"},
	} {
		if got, err := withDatabase(tc.base, "t_x"); got != tc.want || err != nil {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tc.base, got, err, tc.want)
		}
	}
}

// outcome is a testing.TB that records whether it was skipped or failed.
type outcome struct {
	testing.TB
	skipped, failed string
}

func (o *outcome) Skipf(format string, args ...any)  { o.skipped = fmt.Sprintf(format, args...) }
func (o *outcome) Fatalf(format string, args ...any) { o.failed = fmt.Sprintf(format, args...) }

func TestSkipOrFail(t *testing.T) {
	reason := errors.New("no binaries")
	for _, tc := range []struct {
		ci       string
		wantFail bool
	}{{"true", true}, {"1", true}, {"", false}, {"false", false}} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			o := &outcome{TB: t}
			skipOrFail(o, reason)
			got, other := o.skipped, o.failed
			if tc.wantFail {
				got, other = o.failed, o.skipped
			}
			if !strings.Contains(got, "no binaries") || other != "" {
				t.Errorf("skipOrFail under CI=%q: skipped %q, failed %q", tc.ci, o.skipped, o.failed)
			}
		})
	}
}
