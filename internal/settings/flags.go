package settings

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// groupAnnotation is the pflag annotation that holds a flag's Group.
const groupAnnotation = "pyexec.dev/group"

// AddFlags registers a flag for each setting of list on fs, bound to the variable that vars
// holds under the setting's flag (a pointer to string, bool, int, int64, time.Duration,
// []string or []int), with the setting's default and help, and its group for Usage. A
// setting whose Default is nil keeps the variable's current value as its default (a default
// worked out at run time). It panics when a setting has no variable, a variable no setting,
// or a variable's type does not fit: programming errors that any test building the command
// meets.
func AddFlags(fs *pflag.FlagSet, list []Setting, vars map[string]any) {
	seen := map[string]bool{}
	for _, s := range list {
		v, ok := vars[s.Flag]
		if !ok {
			panic("settings: no variable for --" + s.Flag)
		}
		seen[s.Flag] = true
		switch p := v.(type) {
		case *string:
			fs.StringVar(p, s.Flag, defaultOf(s, *p), s.Doc)
		case *bool:
			fs.BoolVar(p, s.Flag, defaultOf(s, *p), s.Doc)
		case *int:
			fs.IntVar(p, s.Flag, defaultOf(s, *p), s.Doc)
		case *int64:
			fs.Int64Var(p, s.Flag, defaultOf(s, *p), s.Doc)
		case *time.Duration:
			fs.DurationVar(p, s.Flag, defaultOf(s, *p), s.Doc)
		case *[]int:
			fs.IntSliceVar(p, s.Flag, nil, s.Doc)
		case *[]string:
			if s.Repeatable {
				fs.StringArrayVar(p, s.Flag, nil, s.Doc)
			} else {
				fs.StringSliceVar(p, s.Flag, nil, s.Doc)
			}
		default:
			panic(fmt.Sprintf("settings: --%s is bound to a %T", s.Flag, v))
		}
		_ = fs.SetAnnotation(s.Flag, groupAnnotation, []string{string(s.Group)})
	}
	for name := range vars {
		if !seen[name] {
			panic("settings: variable " + name + " has no setting")
		}
	}
}

// defaultOf is the setting's default as a T, or def when it has none.
func defaultOf[T any](s Setting, def T) T {
	if s.Default == nil {
		return def
	}
	d, ok := s.Default.(T)
	if !ok {
		panic(fmt.Sprintf("settings: --%s defaults to a %T, its variable is a %T", s.Flag, s.Default, def))
	}
	return d
}

// MakeAbsolute makes the value of each Path setting of list that vars holds (see AddFlags)
// absolute against the working directory, unless it is empty, absolute already, or a bare
// command name (Command).
func MakeAbsolute(list []Setting, vars map[string]any) error {
	for _, s := range list {
		p, ok := vars[s.Flag].(*string)
		if !s.Path || !ok || *p == "" || filepath.IsAbs(*p) || (s.Command && !strings.Contains(*p, "/")) {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", s.Flag, *p, err)
		}
		*p = abs
	}
	return nil
}

// Filter are the settings of list for which keep is true.
func Filter(list []Setting, keep func(Setting) bool) []Setting {
	var out []Setting
	for _, s := range list {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// Check checks a value of the setting against its bounds; the error names the flag and says
// what is wanted, e.g. "--warm must not be negative" or "--memory-limit-mb 16: want 0 (no
// limit) or at least 32".
func (s Setting) Check(v any) error {
	return checkBounds("--"+s.Flag, v, s.Min, s.Max, s.ZeroMeans)
}

// checkBounds checks v (int, int64 or time.Duration) against min and max (of its type, or
// nil); zeroMeans, when set, says what 0 means, and admits it below min.
func checkBounds(name string, v, min, max any, zeroMeans string) error {
	val, ok := number(v)
	if !ok {
		return nil
	}
	lo, hasLo := number(min)
	hi, hasHi := number(max)
	if (zeroMeans != "" && val == 0) || ((!hasLo || val >= lo) && (!hasHi || val <= hi)) {
		return nil
	}
	switch {
	case hasLo && !hasHi && lo == 0:
		msg := name + " must not be negative"
		if zeroMeans != "" {
			msg += " (0: " + zeroMeans + ")"
		}
		return errors.New(msg)
	case hasLo && !hasHi && lo == 1 && zeroMeans == "":
		return errors.New(name + " must be positive")
	}
	return fmt.Errorf("%s %s: want %s", name, format(v), wanted(min, max, zeroMeans))
}

// wanted says in words what values min, max and zeroMeans admit: "at least 1", "0 (no limit)
// or at least 32", "from 0 (no watchdog) to 99", "above 0".
func wanted(min, max any, zeroMeans string) string {
	lo, hasLo := number(min)
	var b strings.Builder
	if zeroMeans != "" && !(hasLo && lo == 0) {
		b.WriteString("0 (" + zeroMeans + ") or ")
	}
	from := format(min)
	if hasLo && lo == 0 && zeroMeans != "" {
		from = "0 (" + zeroMeans + ")"
	}
	switch {
	case hasLo && max != nil:
		b.WriteString("from " + from + " to " + format(max))
	case min == any(Positive):
		b.WriteString("above 0")
	case hasLo:
		b.WriteString("at least " + from)
	case max != nil:
		b.WriteString("at most " + format(max))
	default:
		b.WriteString("any value")
	}
	return b.String()
}

// number is v as an int64, for the kinds that bounds apply to.
func number(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int64:
		return n, true
	case time.Duration:
		return int64(n), true
	}
	return 0, false
}

// format writes a value as the flag takes it.
func format(v any) string {
	if v == nil {
		return ""
	}
	if d, ok := v.(time.Duration); ok {
		return d.String()
	}
	return fmt.Sprint(v)
}

// Usage writes the flags of fs by group, in the order of Groups; flags of no group come
// last under "Other flags".
func Usage(w io.Writer, fs *pflag.FlagSet) {
	sets := map[Group]*pflag.FlagSet{}
	var other *pflag.FlagSet
	fs.VisitAll(func(f *pflag.Flag) {
		g := Group("")
		if v := f.Annotations[groupAnnotation]; len(v) == 1 {
			g = Group(v[0])
		}
		set := sets[g]
		if g == "" {
			set = other
		}
		if set == nil {
			set = pflag.NewFlagSet(string(g), pflag.ContinueOnError)
			set.SortFlags = fs.SortFlags
			if g == "" {
				other = set
			} else {
				sets[g] = set
			}
		}
		set.AddFlag(f)
	})
	first := true
	write := func(title string, set *pflag.FlagSet) {
		if set == nil {
			return
		}
		if !first {
			fmt.Fprintln(w)
		}
		first = false
		fmt.Fprintf(w, "%s:\n%s", title, set.FlagUsagesWrapped(100))
	}
	for _, g := range Groups {
		write(string(g), sets[g])
	}
	write("Other flags", other)
}

// Wanted says in words what a bounded setting takes, for the reference.
func (s Setting) Wanted() string { return wanted(s.Min, s.Max, s.ZeroMeans) }

// relation is a bound between two settings: the value of lesser is at most that of greater.
type relation struct {
	lesser, greater string
	// zeroIsNone: a greater of 0 means none, and then nothing is checked (a maximum of 0).
	zeroIsNone bool
}

// relations are the bounds between settings.
var relations = []relation{
	{lesser: "timeout", greater: "max-timeout"},
	{lesser: "memory-limit-mb", greater: "max-memory-limit-mb", zeroIsNone: true},
	{lesser: "max-connections-per-uid", greater: "max-connections"},
	{lesser: "probe-max-connections-per-ip", greater: "probe-max-connections"},
	{lesser: "session-idle-timeout", greater: "max-session-idle-timeout"},
}

// Validate checks values (by flag) against the bounds of each setting and the bounds between
// settings, for those present: `pyexec serve` checks its flags with it, the server its limits.
// It returns every error, in the order of the settings.
func Validate(values map[string]any) []error {
	var errs []error
	for _, s := range Serve {
		if v, ok := values[s.Flag]; ok {
			if err := s.Check(v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, r := range relations {
		lv, ok1 := values[r.lesser]
		gv, ok2 := values[r.greater]
		l, _ := number(lv)
		g, _ := number(gv)
		switch {
		case !ok1 || !ok2 || (r.zeroIsNone && g == 0):
		case r.zeroIsNone && l == 0:
			errs = append(errs, fmt.Errorf("--%s %s must be set (not 0) under --%s %s", r.lesser, format(lv), r.greater, format(gv)))
		case l > g:
			errs = append(errs, fmt.Errorf("--%s %s is over --%s %s", r.lesser, format(lv), r.greater, format(gv)))
		}
	}
	return errs
}
