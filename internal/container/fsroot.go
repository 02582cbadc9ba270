package container

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxRead bounds every file read; mountinfo of a busy node is the largest.
const maxRead = 4 << 20

// maxLinks bounds the symbolic links followed while resolving one name.
const maxLinks = 40

var errTooManyLinks = errors.New("too many levels of symbolic links")

// fsRoot is a directory read as if it were "/": names are resolved inside it and an
// absolute symbolic link starts again from it, so a fixture root never reaches the
// real /proc.
type fsRoot string

// resolve turns name ("/proc/self/cgroup") into a path under the root, following
// symbolic links inside the root; followLast says whether a link in the last
// component is followed too.
func (r fsRoot) resolve(name string, followLast bool) (string, error) {
	todo := strings.Split(strings.Trim(path.Clean("/"+name), "/"), "/")
	cur := "" // resolved part, relative to the root, without symbolic links
	links := 0
	for len(todo) > 0 {
		part := todo[0]
		todo = todo[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			cur = parentOf(cur)
			continue
		}
		next := path.Join(cur, part)
		if len(todo) == 0 && !followLast {
			cur = next
			break
		}
		host := r.host(next)
		fi, err := os.Lstat(host)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", &fs.PathError{Op: "resolve", Path: name, Err: errTooManyLinks}
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = ""
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return r.host(cur), nil
}

func parentOf(p string) string {
	d := path.Dir(p)
	if d == "." || d == "/" {
		return ""
	}
	return d
}

func (r fsRoot) host(rel string) string {
	return filepath.Join(string(r), filepath.FromSlash(rel))
}

// stat follows symbolic links inside the root.
func (r fsRoot) stat(name string) (fs.FileInfo, error) {
	p, err := r.resolve(name, true)
	if err != nil {
		return nil, err
	}
	return os.Stat(p)
}

// exists reports whether name exists; any error counts as absent.
func (r fsRoot) exists(name string) bool {
	_, err := r.stat(name)
	return err == nil
}

// read returns at most maxRead bytes of the regular file name.
func (r fsRoot) read(name string) ([]byte, error) {
	p, err := r.resolve(name, true)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("not a regular file")}
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxRead))
}

// readlink returns the target of the symbolic link name, without following it.
func (r fsRoot) readlink(name string) (string, error) {
	p, err := r.resolve(name, false)
	if err != nil {
		return "", err
	}
	return os.Readlink(p)
}
