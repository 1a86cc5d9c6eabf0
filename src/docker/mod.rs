//! bollard: the only code that talks to the Docker engine.
