"""The module loader: import, configure, construct, verify; every failure is one clear message."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mxtwisted.config import ModuleConfig
from mxtwisted.interfaces import IModuleApi, IModuleLifecycle
from mxtwisted.modules import ModuleLoadError, load_modules


@implementer(IModuleLifecycle)
class Good:
    def __init__(self, config, api):
        self.config = config
        self.api = api

    def on_start(self):
        pass

    def on_stop(self):
        pass


class WithParse(Good):
    @staticmethod
    def parse_config(config):
        if "limit" not in config:
            raise ValueError("'limit' is required")
        return {"limit": int(config["limit"])}


@implementer(IModuleLifecycle)
class Incomplete:
    """Declares IModuleLifecycle but has no on_stop."""

    def __init__(self, config, api):
        pass

    def on_start(self):
        pass


class NoInterface:
    def __init__(self, config, api):
        pass


class Exploding(Good):
    def __init__(self, config, api):
        raise RuntimeError("kaboom")


def load(path, config=None):
    return load_modules([ModuleConfig(f"tests.test_modules.{path}" if "." not in path else path, config or {})],
                        "example.org", None, Clock())


class LoaderTests(SynchronousTestCase):
    def test_good_module(self):
        (module,) = load("Good", {"a": 1})
        self.assertTrue(module.implements(IModuleLifecycle))
        self.assertEqual(module.instance.config, {"a": 1})
        self.assertTrue(IModuleApi.providedBy(module.instance.api))
        self.assertEqual(module.instance.api.server_name, "example.org")
        self.assertEqual(module.instance.api.get_logger().namespace, "tests.test_modules.Good")

    def test_parse_config(self):
        (module,) = load("WithParse", {"limit": "5"})
        self.assertEqual(module.instance.config, {"limit": 5})
        e = self.assertRaises(ModuleLoadError, load, "WithParse", {})
        self.assertEqual(str(e), "module 'tests.test_modules.WithParse': invalid config: 'limit' is required")

    def test_import_error(self):
        e = self.assertRaises(ModuleLoadError, load, "no_such_pkg.Thing")
        self.assertIn("cannot import 'no_such_pkg'", str(e))

    def test_missing_attribute(self):
        e = self.assertRaises(ModuleLoadError, load, "Missing")
        self.assertIn("has no attribute 'Missing'", str(e))

    def test_not_dotted(self):
        e = self.assertRaises(ModuleLoadError, load_modules, [ModuleConfig("Thing", {})], "a.b", None, Clock())
        self.assertIn("dotted path", str(e))

    def test_constructor_error(self):
        e = self.assertRaises(ModuleLoadError, load, "Exploding")
        self.assertIn("failed to start: RuntimeError: kaboom", str(e))

    def test_no_extension_point(self):
        e = self.assertRaises(ModuleLoadError, load, "NoInterface")
        self.assertIn("implements no extension point", str(e))

    def test_interface_not_really_implemented(self):
        e = self.assertRaises(ModuleLoadError, load, "Incomplete")
        self.assertIn("does not implement IModuleLifecycle", str(e))
        self.assertIn("on_stop", str(e))
        self.assertNotIn("\n", str(e))
