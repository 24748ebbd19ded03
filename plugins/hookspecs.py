"""The hooks a plugin implements (layers, optimizers): the whole contract between gradserve and a plugin."""

import pluggy

hookspec = pluggy.HookspecMarker("gradserve")
hookimpl = pluggy.HookimplMarker("gradserve")


@hookspec
def register_layers(register):
    """Register the layer classes this plugin provides.

    Called once when the server builds its layer registry, with keyword
    arguments only, so that later versions may pass more.

    :param register: a callable taking one :class:`gradserve.plugins.Layer`
        subclass. It validates the class's schema and records which plugin
        and distribution version provided it. A layer name registered by two
        plugins is a start-up error naming both.

    Example::

        @hookimpl
        def register_layers(register):
            register(Mul)
            register(Add)
    """


@hookspec
def register_optimizers(register):
    """Register the optimizer classes this plugin provides (for Train streams).

    Called once when the server builds its registry, right after
    ``register_layers``, with keyword arguments only.

    :param register: a callable taking one :class:`gradserve.plugins.Optimizer`
        subclass. It validates the class (name, settings, state, update) and
        records which plugin and distribution version provided it. Names are
        matched without regard to case; one registered by two plugins is a
        start-up error naming both.

    Example::

        @hookimpl
        def register_optimizers(register):
            register(SGD)
            register(Adam)
    """
