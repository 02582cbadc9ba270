"""The runner's modules, in memory. pyexec starts the interpreter with a short bootstrap on its
command line (see pythonCommand in proc.go), which reads this file's source from a pipe, followed
by a call of boot with the sources of every module of the package, and runs it. boot registers
a finder for those modules, so that they import as any package does without a file of theirs
anywhere, then calls the entry point's main."""
import sys


class SourceFinder:
    """Finds and loads the modules of one package from their sources. sources maps a file's
    path in the package's directory ("pkg/__init__.py", "pkg/run.py") to its source; the module
    pkg.run compiles with the file name "<pyexec>/pkg/run.py", and tracebacks find its lines
    through get_source."""

    def __init__(self, sources):
        self.sources = {}
        self.packages = set()
        for path, source in sources.items():
            if not path.endswith(".py"):
                continue
            name = path[: -len(".py")].replace("/", ".")
            if name.endswith(".__init__"):
                name = name[: -len(".__init__")]
                self.packages.add(name)
            self.sources[name] = (source, "<pyexec>/" + path)

    def find_spec(self, name, path=None, target=None):
        if name not in self.sources:
            return None
        import importlib.util

        return importlib.util.spec_from_loader(name, self, origin=self.sources[name][1], is_package=name in self.packages)

    def create_module(self, spec):
        return None  # the default module

    def exec_module(self, module):
        source, filename = self.sources[module.__name__]
        exec(compile(source, filename, "exec"), module.__dict__)

    def is_package(self, name):
        return name in self.packages

    def get_source(self, name):
        if name not in self.sources:
            raise ImportError("no source of %s" % name, name=name)
        return self.sources[name][0]


def boot(sources, entry):
    """Register sources (see SourceFinder) and call main(path_entry) of the module entry, where
    path_entry is the first entry of sys.path, taken off it first: `python -c` puts the working
    directory there, and the code's input files are there: a file named json.py or resource.py
    must not replace the runner's own modules (nor switch the limits off). The code gets the
    directory back once it is confined and limited, just before it runs (codeproc.give_path)."""
    path_entry = sys.path.pop(0)
    sys.meta_path.insert(0, SourceFinder(sources))
    __import__(entry)
    sys.modules[entry].main(path_entry)
