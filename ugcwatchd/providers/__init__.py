"""Provider clients: FaceDub and DubLab behind one small interface, found by name in ``registry``."""
