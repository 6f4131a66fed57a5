package apicheck

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/printer"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the API snapshot in docs/api")

const (
	module = "github.com/durasock/durasock"
	root   = "../.."
)

// notPublic are the top folders whose packages are not part of the library's API.
var notPublic = []string{"internal", "cmd", "examples", "interop", "bench", "docs", "scripts"}

// publicPackages returns the module's importable library packages, as paths
// relative to the module root.
func publicPackages(t *testing.T) []string {
	t.Helper()
	var pkgs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		name := d.Name()
		if rel != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules" ||
			slices.Contains(notPublic, strings.Split(rel, "/")[0]) || slices.Contains(strings.Split(rel, "/"), "internal")) {
			return filepath.SkipDir
		}
		bp, err := build.ImportDir(path, 0)
		if err != nil || bp.Name == "main" || len(bp.GoFiles) == 0 {
			return nil
		}
		pkgs = append(pkgs, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// parse returns the non-test files of the package in dir built for this platform.
func parse(t *testing.T, fset *token.FileSet, rel string, mode parser.Mode) []*ast.File {
	t.Helper()
	dir := filepath.Join(root, rel)
	bp, err := build.ImportDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range bp.GoFiles {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, mode)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

func TestLayering(t *testing.T) {
	fset := token.NewFileSet()
	for _, pkg := range publicPackages(t) {
		allowed, ok := layers[pkg]
		if !ok {
			t.Errorf("%s is a public package without a row in layering.go: say what it may import", pkg)
			continue
		}
		for _, f := range parse(t, fset, pkg, parser.ImportsOnly) {
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				dep, ok := strings.CutPrefix(path, module+"/")
				if !ok {
					continue
				}
				if !slices.Contains(allowed, dep) {
					t.Errorf("%s imports %s (%s); layering.go allows %v",
						pkg, dep, fset.Position(imp.Pos()), allowed)
				}
			}
		}
	}
}

func TestAPISnapshot(t *testing.T) {
	dir := filepath.Join(root, "docs", "api")
	want := map[string]bool{}
	for _, pkg := range publicPackages(t) {
		file := filepath.Join(dir, strings.ReplaceAll(pkg, "/", ".")+".txt")
		want[filepath.Base(file)] = true
		got := apiOf(t, pkg)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		old, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("%s: no API snapshot (%v); run go test ./internal/apicheck -update and review docs/api", pkg, err)
			continue
		}
		if string(old) != got {
			t.Errorf("the public API of %s changed; if that is deliberate, run go test ./internal/apicheck -update and commit docs/api:\n%s",
				pkg, lineDiff(string(old), got))
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !want[e.Name()] {
			if *update {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					t.Fatal(err)
				}
				continue
			}
			t.Errorf("docs/api/%s describes no public package; run go test ./internal/apicheck -update", e.Name())
		}
	}
}

// apiOf lists the exported declarations of a package, one block each, sorted.
func apiOf(t *testing.T, pkg string) string {
	t.Helper()
	fset := token.NewFileSet()
	var decls []string
	for _, f := range parse(t, fset, pkg, parser.SkipObjectResolution) {
		for _, d := range f.Decls {
			decls = append(decls, exported(fset, d)...)
		}
	}
	sort.Strings(decls)
	var b strings.Builder
	fmt.Fprintf(&b, "# exported API of %s/%s\n# regenerate: go test ./internal/apicheck -run TestAPISnapshot -update\n\n", module, pkg)
	for _, d := range decls {
		b.WriteString(d)
		b.WriteString("\n")
	}
	return b.String()
}

func exported(fset *token.FileSet, d ast.Decl) []string {
	switch d := d.(type) {
	case *ast.FuncDecl:
		if !d.Name.IsExported() {
			return nil
		}
		fn := &ast.FuncDecl{Recv: d.Recv, Name: d.Name, Type: d.Type}
		if d.Recv != nil {
			if !ast.IsExported(receiverType(d.Recv.List[0].Type)) {
				return nil
			}
			recv := *d.Recv.List[0]
			recv.Names = nil
			fn.Recv = &ast.FieldList{List: []*ast.Field{&recv}}
		}
		return []string{render(fset, fn)}
	case *ast.GenDecl:
		var out []string
		var lastType ast.Expr
		for _, s := range d.Specs {
			switch s := s.(type) {
			case *ast.TypeSpec:
				if !s.Name.IsExported() {
					continue
				}
				spec := *s
				spec.Doc, spec.Comment = nil, nil
				spec.Type = publicShape(s.Type)
				out = append(out, render(fset, &ast.GenDecl{Tok: token.TYPE, Specs: []ast.Spec{&spec}}))
			case *ast.ValueSpec:
				if s.Type != nil || len(s.Values) > 0 {
					lastType = s.Type
				}
				for _, n := range s.Names {
					if !n.IsExported() {
						continue
					}
					line := d.Tok.String() + " " + n.Name
					if lastType != nil {
						line += " " + render(fset, lastType)
					}
					out = append(out, line)
				}
			}
		}
		return out
	}
	return nil
}

// publicShape drops a struct's unexported fields: they are not part of the API.
func publicShape(e ast.Expr) ast.Expr {
	st, ok := e.(*ast.StructType)
	if !ok {
		return e
	}
	fields := &ast.FieldList{}
	for _, f := range st.Fields.List {
		var names []*ast.Ident
		for _, n := range f.Names {
			if n.IsExported() {
				names = append(names, n)
			}
		}
		embeddedPublic := len(f.Names) == 0 && ast.IsExported(receiverType(f.Type))
		if len(names) == 0 && !embeddedPublic {
			continue
		}
		fields.List = append(fields.List, &ast.Field{Names: names, Type: f.Type, Tag: f.Tag})
	}
	return &ast.StructType{Fields: fields}
}

// receiverType returns the type name of a receiver or embedded field expression.
func receiverType(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return receiverType(e.X)
	case *ast.IndexExpr:
		return receiverType(e.X)
	case *ast.IndexListExpr:
		return receiverType(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.Ident:
		return e.Name
	}
	return ""
}

func render(fset *token.FileSet, n ast.Node) string {
	var b bytes.Buffer
	if err := (&printer.Config{Mode: printer.UseSpaces | printer.TabIndent, Tabwidth: 8}).Fprint(&b, fset, n); err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return b.String()
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var out strings.Builder
	for _, l := range strings.Split(a, "\n") {
		if !inb[l] {
			out.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ina[l] {
			out.WriteString("+ " + l + "\n")
		}
	}
	return out.String()
}
