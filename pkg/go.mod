// The public Go packages of pyexec: the API's wire types (api) and the Go client (client).
// A module of its own, so that a program that imports the client gets nothing but the
// standard library in its module graph.
module github.com/pyexec/pyexec/pkg

go 1.26.8
