"""Provider clients: FaceDub and DubLab behind one small interface (DESIGN §7)."""
