"""The command line the three `extruct_bert_*.py` scripts share: their flags and their
first steps before a model is loaded.

Above `bertlib.flags` (BERT flags), `bertlib.devices` and `bertlib.features` (the pipeline),
which stay independent of each other.
"""

import argparse

from bertlib import devices, distributed, features, flags


def argument_parser(description):
    """The parser of an extraction script: --input/--output, then the BERT flags (with
    --communicator); the script adds its model's own."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    features.add_io_arguments(parser)
    flags.add_bert_arguments(parser, communicator=True)
    return parser


def start(args):
    """Joins the MPI group (--communicator), checks the BERT files, --input and --output,
    and picks --gpu, in that order, before any slow work.

    Returns (comm or None, the number of input lines or None when unknown, device).
    """
    comm = distributed.setup(args)
    flags.check_bert_arguments(args)
    total = features.check_io(args, flags.input_files(args), comm)
    device = devices.select_device(args.gpu, comm)
    return comm, total, device
