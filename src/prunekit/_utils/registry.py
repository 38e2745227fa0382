"""One registry for everything looked up by name: methods, criteria, zoo models, graph rules.

    METHODS = Registry("method")
    @METHODS.register("magnitude-global")
    def magnitude_global(...): ...
    METHODS.get("magnitude-global"); METHODS.names()

`get` of an unknown name is a PruneError listing the choices, so a typo in a recipe, a CLI
flag or a saved file is one clear line.
"""
from prunekit.errors import PruneError


class Registry:
    def __init__(self, kind: str, hint: str = ""):
        self.kind = kind        # what an entry is, for the error: "method", "criterion", ...
        self.hint = hint        # what else `get` callers accept, appended to the error
        self._entries = {}
        self._tags = {}

    def register(self, *names, **tags):
        """Decorator: register the object under each name (an existing name is replaced, so a
        user can override a built-in); `tags` are kept for `tagged` (e.g. trains=True)."""
        def wrap(obj):
            for name in names:
                self.add(name, obj, **tags)
            return obj
        return wrap

    def add(self, name, obj, **tags) -> None:
        self._entries[name] = obj
        self._tags[name] = tags

    def get(self, name):
        if name not in self._entries:
            choices = ", ".join(str(n) for n in self.names())
            raise PruneError(f"unknown {self.kind} {name!r}; choose from: {choices}{self.hint}")
        return self._entries[name]

    def find(self, name, default=None):
        """The entry or `default`, for lookups where absence is normal (a layer with no rule)."""
        return self._entries.get(name, default)

    def names(self) -> list:
        """Registered names, in registration order."""
        return list(self._entries)

    def tagged(self, tag) -> list:
        """Names registered with `tag` set true."""
        return [n for n, tags in self._tags.items() if tags.get(tag)]

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
