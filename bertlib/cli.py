"""What every script shares: common flags, logging, device choice, model loading, and
turning bad input into one clear message instead of a traceback."""

import ctypes
import errno
import logging
import math
import os
import signal
import sys

from bertlib import distributed, fileio
from bertlib.errors import UsageError

LOG_FORMAT = '%(asctime)s - %(funcName)s - %(levelname)s - %(message)s'

logger = logging.getLogger(__name__)


def setup_logging(level=logging.INFO):
    """Logs go to stderr in the original BERT-DML's format; stdout is left for data."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def keep_freed_memory():
    """Tells glibc to keep freed blocks instead of returning them to the system.

    NumPy's large temporaries (tens of MB in a BERT layer) are otherwise mmapped and
    unmapped at every operation, and every fresh page faults on first touch: that cost
    CPU inference about 10% of its time.
    """
    if not sys.platform.startswith('linux'):
        return
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it cleans up as Ctrl-C does (temporary
    files removed, the last complete files kept)."""


_MAIN_PID = []  # the process that installed the handler


def _terminate(signum, frame):
    if os.getpid() not in _MAIN_PID:
        # A forked worker (e.g. a clustering child) dies of SIGTERM as it always did.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def run(main):
    """Runs `main()` as a script: UsageError -> 'error: ...' and exit 2, no traceback.

    So is an OSError that escaped (a full disk, also under a redirected stdout, which is
    flushed here so that its error is ours, not the interpreter's at exit). SIGTERM ends
    the run as Ctrl-C does, with status 143 (130 for Ctrl-C).

    Under mpiexec (--communicator) a rank's error ends every rank: see
    `distributed.fail`."""
    try:
        check_standard_streams()
    except UsageError as e:
        print('error: %s' % e, file=sys.stderr)
        sys.exit(2)
    setup_logging()
    keep_freed_memory()
    _MAIN_PID[:] = [os.getpid()]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        status = main()
        sys.stdout.flush()
    except UsageError as e:
        _flush_stdout()
        distributed.fail(e, 2)
    except Terminated:
        _flush_stdout()
        print('terminated', file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        _flush_stdout()
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; that is not an error of ours.
        _silence_stdout()
        distributed.abort(0)  # the other ranks would wait for rank 0 for ever
        sys.exit(0)
    except OSError as e:
        _silence_stdout()
        where = e.filename if e.filename is not None else 'standard output' \
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO) else None
        distributed.fail(UsageError('%s%s' % ('%s: ' % where if where else '',
                                             e.strerror or e)), 2)
    sys.exit(status or 0)


def _flush_stdout():
    """Writes out what was printed before an error; drops it if that fails too."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()


def _silence_stdout():
    """Points stdout at /dev/null, dropping what could not be written: the interpreter
    would otherwise fail again flushing it at exit, with a second message."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# The range types of the flags, for argparse's `type=`: a value out of range is a
# UsageError naming the flag, raised while the command line is parsed (argparse lets any
# other exception than ValueError and TypeError through), so it is the one-line error
# before anything is read. A value that is not a number at all stays argparse's error.

# Seeds go to NumPy's RandomState and scikit-learn, which take 0 ... 2**32 - 1.
MAX_SEED = 2 ** 32 - 1
# Upper bounds of the sizes a run allocates for: far above any real use (the original
# BERT-DML's batch was 64, its --dim 512, its --triplets 1,000), far below a MemoryError
# (--dim 10**9 asked for 59.6 GiB of weights, --memory_size 10**9 for 1.86 TiB).
MAX_BATCHSIZE = 2 ** 16
MAX_DIM = 2 ** 16
MAX_TRIPLETS = 10 ** 7
MAX_MEMORY_SIZE = 10 ** 7


# More epochs than anyone runs: a typo (--epoch 1000000000) would run until killed.
MAX_EPOCHS = 100000


def integer(flag, low, high=None, note=''):
    """An argparse type: an int from `low` to `high` (no upper bound when None), else a
    UsageError '<flag> must be ...'; `note` (e.g. ' (0: no limit)') follows the range."""
    def parse(text):
        value = int(text)
        if value < low or (high is not None and value > high):
            span = 'at least %d' % low if high is None else 'between %d and %d' % (low, high)
            raise UsageError('%s must be %s%s, got %s' % (flag, span, note, text))
        return value
    parse.__name__ = 'int'  # argparse's "invalid int value: 'x'" for a non-number
    return parse


def real(flag, low, high=None, above=False, below=False, note=''):
    """An argparse type: a finite float at least `low` (above it with `above`) and at
    most `high` (below it with `below`; no upper bound when None), else a UsageError
    '<flag> must be ...'. NaN and infinity never pass: every comparison with NaN is
    false, so it would slip through a plain range check."""
    def parse(text):
        value = float(text)
        if not (math.isfinite(value) and (value > low if above else value >= low)
                and (high is None or (value < high if below else value <= high))):
            span = ('a number above %g' if above else 'a number of at least %g') % low
            if high is not None:
                span += (' and below %g' if below else ' and at most %g') % high
            raise UsageError('%s must be %s%s, got %s' % (flag, span, note, text))
        return value
    parse.__name__ = 'float'
    return parse


def utf8_text(text):
    """The argparse type of --text_prefix: the text as given, refused when the command
    line held bytes that are not UTF-8 (Python keeps them as lone surrogates, '\\udcff',
    which would be saved with a model and tokenised as no text file could spell them)."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        raise UsageError('--text_prefix %r is not UTF-8 text: give it in UTF-8' % text)
    return text


def add_seed_argument(parser, description):
    """--seed, described by `description`, range-checked as NumPy and scikit-learn need
    it."""
    parser.add_argument('--seed', type=integer('--seed', 0, MAX_SEED), default=0,
                        help=description)


def check_standard_streams():
    """Gives a closed standard stream (a shell's `<&-`, `>&-`, `2>&-`) /dev/null in its
    place, so that no file the run opens gets descriptor 0, 1 or 2 (print() would write
    into it); a closed standard output is then an error, as what would be printed there
    (features, tables, the flags) would be lost. A closed standard input stays None:
    `data` refuses '-' then."""
    closed = []
    for fd, name in ((0, 'stdin'), (1, 'stdout'), (2, 'stderr')):
        if getattr(sys, name) is None:
            closed.append(name)
            replacement = os.open(os.devnull, os.O_RDWR)
            if replacement != fd:
                os.dup2(replacement, fd)
                os.close(replacement)
    if 'stderr' in closed:
        sys.stderr = open(2, 'w', closefd=False)  # the error messages go nowhere, quietly
    if 'stdout' in closed:
        sys.stdout = open(1, 'w', closefd=False)
        raise UsageError('standard output is closed (>&-): redirect it to a file or to '
                         '/dev/null')


# The file names of a converted model's folder (`bertlib.convert` writes them), which
# --bert_dir stands for; the three flags name the files one by one.
BERT_DIR_TOKENIZER_JSON = 'tokenizer.json'
BERT_DIR_VOCAB = 'vocab.txt'
BERT_DIR_CONFIG = 'bert_config.json'
BERT_DIR_CHECKPOINT = 'arrays_bert_model.ckpt.npz'
BERT_FILE_FLAGS = ('vocab_file', 'bert_config_file', 'init_checkpoint')


def add_bert_arguments(parser, batchsize=64, communicator=False):
    """The flags that locate a pre-trained BERT and say how to run it; `communicator`:
    also --communicator, for the scripts that run under mpiexec."""
    group = parser.add_argument_group(
        'pre-trained BERT', 'either --bert_dir DIR, or all three of --vocab_file,\n'
        '--bert_config_file and --init_checkpoint (the original BERT-DML\'s flags)')
    group.add_argument('--bert_dir', default=None, metavar='DIR',
                       help='the folder `python -m bertlib.convert` (or `make model`) '
                            'writes: stands for --vocab_file DIR/%s if the folder has '
                            'one, else DIR/%s, --bert_config_file DIR/%s and '
                            '--init_checkpoint DIR/%s' % (BERT_DIR_TOKENIZER_JSON,
                                                          BERT_DIR_VOCAB, BERT_DIR_CONFIG,
                                                          BERT_DIR_CHECKPOINT))
    group.add_argument('--vocab_file', default=None,
                       help='the tokenizer: a WordPiece vocabulary, one token a line '
                            '(vocab.txt), or a SentencePiece-unigram tokenizer.json '
                            '(XLM-R vocabularies: multilingual-e5 and the like)')
    group.add_argument('--bert_config_file', default=None,
                       help="model shape: Google's bert_config.json or Hugging Face config.json")
    group.add_argument('--init_checkpoint', default=None,
                       help='pre-trained weights: arrays_bert_model.ckpt.npz '
                            '(make one with python -m bertlib.convert)')
    group.add_argument('--do_lower_case', choices=('auto', 'true', 'false'), default='auto',
                       help='lower-case and strip accents before WordPiece; auto: only if '
                            'the vocabulary has no upper-case entries (default: auto). A '
                            'SentencePiece tokenizer.json carries its own normalisation')
    group.add_argument('--max_seq_length', type=int, default=128,
                       help='longest input in tokens, [CLS] and [SEP] included; longer '
                            'sentences are truncated and counted in the log (default: 128; '
                            'the original BERT-DML cut at the model\'s 512 positions: '
                            '--max_seq_length 512)')
    group.add_argument('--text_prefix', default=None, metavar='STR', type=utf8_text,
                       help="put STR before every text before tokenising, e.g. 'query: ' "
                            "for multilingual-e5. Saved with a trained model: --resume must "
                            "give the same, and the extractors of a trained model use its "
                            "own and refuse another (default: empty; theirs: the model's)")
    group.add_argument('--join_ellipsis', action='store_true',
                       help="turn '. . .' into '…' before tokenising, as the original "
                            "BERT-DML did (69 of rt-polarity's 1,066 test lines have one); "
                            "give it to training and extraction alike")
    run_group = parser.add_argument_group('running')
    run_group.add_argument('--gpu', '-g', type=int, default=-1,
                           help='GPU id to run on with CuPy (`make gpu`); -1: CPU (default: '
                                '-1). With --communicator, process r of a node uses GPU id + '
                                'r, or GPU id of its own where each process sees its own '
                                'GPUs (CUDA_VISIBLE_DEVICES)')
    run_group.add_argument('--batchsize', '-b', default=batchsize,
                           type=integer('--batchsize', 1, MAX_BATCHSIZE),
                           help='sentences per batch, over all processes with '
                                '--communicator (default: %d)' % batchsize)
    if communicator:
        run_group.add_argument(
            '--communicator', choices=distributed.COMMUNICATORS, default=None,
            help='run as one of the N processes of `mpiexec -n N`, sharing the work '
                 'through this ChainerMN communicator: naive (CPUs; extraction on GPUs '
                 'too), flat (extraction on GPUs) or pure_nccl (GPUs, NCCL 2: the one '
                 'for training on GPUs). Default: none, one process')
    return parser


def add_training_arguments(parser, out):
    """The original BERT-DML's training flags, shared by train_dml.py and
    train_classifier.py."""
    parser.add_argument('--train', required=True, help='training file, label<TAB>text')
    parser.add_argument('--eval', required=True, help='evaluation file, label<TAB>text')
    parser.add_argument('--out', '-o', default=out,
                        help='directory for models, labels.bin, log.jsonl and the plot '
                             '(default: %s)' % out)
    add_bert_arguments(parser, communicator=True)
    parser.set_defaults(text_prefix='')  # a model is trained with one, empty by default
    train = parser.add_argument_group('training')
    train.add_argument('--epoch', '-e', type=integer('--epoch', 1, MAX_EPOCHS), default=100,
                       help='number of epochs, 1 to %d (default: 100)' % MAX_EPOCHS)
    # Adam moves each weight by about the learning rate a step: above 1 a BERT's weights
    # leave float32's range within steps (1e30 divided by zero in LayerNorm).
    train.add_argument('--learnrate', '-l', type=real('--learnrate', 0, 1, above=True),
                       default=5e-5,
                       help='peak learning rate, decayed linearly to 0: above 0 and at most '
                            '1 (default: 5e-5)')
    train.add_argument('--weightdecay', type=real('--weightdecay', 0, 1), default=0.01,
                       help='decoupled weight decay of weight matrices, 0 to at most 1 '
                            '(default: 0.01)')
    train.add_argument('--warmup', default=0.0,
                       type=real('--warmup', 0, 1, below=True,
                                 note=' (the fraction of the steps spent warming up)'),
                       help='fraction of the steps spent warming the rate up (default: 0)')
    train.add_argument('--freeze_word_embeddings', action='store_true',
                       help='train all but the word embedding table: no gradient and no '
                            'Adam moments for it (on multilingual-e5-small\'s 250,037 '
                            'rows, 1.8 GB less peak memory); the saved model keeps the '
                            'whole table')
    add_seed_argument(train, 'seed of every random draw (default: 0)')
    train.add_argument('--resume', default='',
                       help='continue from DIR/final.model and DIR/final.state')
    train.add_argument('--start_epoch', type=integer('--start_epoch', 1), default=None,
                       help='first epoch to run (default: 1, or the one after the epoch '
                            'saved in --resume)')
    train.add_argument('--noplot', action='store_true', help='do not draw <out>.png')
    return parser


def check_bert_arguments(args):
    """Fills in the three file flags from --bert_dir (`resolve_bert_dir`) and checks
    --max_seq_length; a UsageError for either. Run once, first thing after parsing."""
    resolve_bert_dir(args)
    if args.max_seq_length < 2:
        raise UsageError('--max_seq_length must be at least 2 ([CLS] and [SEP]), got %d'
                         % args.max_seq_length)


def resolve_bert_dir(args):
    """Sets args.vocab_file, args.bert_config_file and args.init_checkpoint to the files
    of --bert_dir. --bert_dir with any of the three, or neither it nor all three, is a
    UsageError: one way to name the model per command. Whether the files exist is
    `load_bert`'s check, the same for both ways. A second call (a script that needs the
    files before `check_bert_arguments`) finds them resolved and leaves them."""
    given = ['--' + name for name in BERT_FILE_FLAGS if getattr(args, name) is not None]
    if args.bert_dir is None:
        missing = ['--' + name for name in BERT_FILE_FLAGS if getattr(args, name) is None]
        if missing:
            raise UsageError('give --bert_dir DIR (the folder python -m bertlib.convert '
                             'writes) or all of --vocab_file, --bert_config_file and '
                             '--init_checkpoint; missing: %s' % ', '.join(missing))
        return
    files = bert_dir_files(args.bert_dir)
    if given and [getattr(args, name) for name in BERT_FILE_FLAGS] == list(files):
        return  # resolved already
    if given:
        raise UsageError('--bert_dir stands for --vocab_file, --bert_config_file and '
                         '--init_checkpoint: give it or them, not both (%s given too)'
                         % ', '.join(given))
    if not os.path.isdir(args.bert_dir):
        raise UsageError('%s: --bert_dir %s' % (args.bert_dir, 'is not a folder'
                                                 if os.path.exists(args.bert_dir)
                                                 else 'not found'))
    args.vocab_file, args.bert_config_file, args.init_checkpoint = files


def bert_dir_files(bert_dir):
    """The (vocab_file, bert_config_file, init_checkpoint) that --bert_dir stands for."""
    tokenizer_json = os.path.join(bert_dir, BERT_DIR_TOKENIZER_JSON)
    vocab_file = tokenizer_json if os.path.exists(tokenizer_json) else \
        os.path.join(bert_dir, BERT_DIR_VOCAB)
    return (vocab_file, os.path.join(bert_dir, BERT_DIR_CONFIG),
            os.path.join(bert_dir, BERT_DIR_CHECKPOINT))


def settle_text_prefix(args, model_path):
    """Sets args.text_prefix to the one `model_path` (a trained model) was trained with
    when the flag was not given; a different one given is a UsageError. Models saved
    before the prefix was recorded were trained without one."""
    from bertlib import checkpoints
    trained = checkpoints.read_meta(model_path).get('text_prefix', '')
    if args.text_prefix is None:
        args.text_prefix = trained
    elif args.text_prefix != trained:
        raise UsageError('--text_prefix %r: %s was trained with --text_prefix %r; give that '
                         'one or leave the flag out' % (args.text_prefix, model_path, trained))


def select_device(gpu, comm=None):
    """Returns the chainer device for `--gpu`: the CPU for -1, else a CUDA device that
    has been tried (a small cuBLAS product and a compiled kernel ran on it).

    With a communicator, the processes of a node share its GPUs: the one that is r-th
    on its node (comm.intra_rank) takes GPU `gpu` + r, unless each process sees GPUs of
    its own (a scheduler sets CUDA_VISIBLE_DEVICES per process): then each takes `gpu`
    of what it sees. Every failure is a UsageError that names the fix."""
    import chainer
    if gpu < 0:
        return chainer.get_device('@numpy')
    count = _visible_gpus(gpu)
    index = gpu
    if comm is not None:
        index = gpu_for_rank(gpu, count, comm.intra_rank, comm.intra_size)
    if index >= count:
        raise UsageError('--gpu %d: only %d GPU(s) visible (CUDA_VISIBLE_DEVICES=%s)'
                         % (gpu, count, os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')))
    device = _try_gpu(gpu, index)
    if comm is not None:
        check_distinct_gpus(comm.mpi_comm.allgather((_hostname(), _bus_id(index))), gpu)
    return device


def _visible_gpus(gpu):
    """How many GPUs CuPy sees; a UsageError if CuPy or the driver is missing."""
    try:
        import cupy
    except ImportError:
        raise UsageError('--gpu %d: CuPy is not installed; install it with `make gpu` '
                         '(CUDA 12) or `make gpu CUDA=13`, or run on the CPU with --gpu -1'
                         % gpu)
    except Exception as e:  # a CuPy built for another NumPy or CUDA
        raise UsageError('--gpu %d: CuPy does not import (%s); reinstall it with `make '
                         'gpu`, or run on the CPU with --gpu -1' % (gpu, _first_line(e)))
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, or no GPU on this machine (a login node)
        raise UsageError('--gpu %d: no usable CUDA GPU (%s); run on the CPU with --gpu -1'
                         % (gpu, _first_line(e)))
    if count == 0:
        raise UsageError('--gpu %d: no CUDA GPU visible; run on the CPU with --gpu -1' % gpu)
    return count


def gpu_for_rank(gpu, count, intra_rank, intra_size):
    """The GPU index, among the `count` this process sees, for the `intra_rank`-th of
    `intra_size` processes on a node started with --gpu `gpu`."""
    if gpu + intra_size <= count:
        return gpu + intra_rank  # every process sees all the node's GPUs
    if count < intra_size and gpu < count:
        return gpu  # too few to share: each process sees its own (CUDA_VISIBLE_DEVICES)
    raise UsageError('--gpu %d: process %d of %d on this node needs GPU %d but only %d are '
                     'visible: start at most %d processes per node, or give each its own '
                     'GPU with CUDA_VISIBLE_DEVICES'
                     % (gpu, intra_rank + 1, intra_size, gpu + intra_rank, count,
                        max(count - gpu, 0)))


def check_distinct_gpus(placements, gpu):
    """placements: (host, PCI bus id) of every rank. Two ranks on one GPU would share
    its memory and NCCL refuses them: a UsageError names the two."""
    seen = {}
    for rank, placement in enumerate(placements):
        if placement in seen:
            raise UsageError('--gpu %d: processes %d and %d on %s both use the GPU at %s; '
                             'give each process its own GPU (CUDA_VISIBLE_DEVICES)'
                             % (gpu, seen[placement], rank, placement[0], placement[1]))
        seen[placement] = rank


def _try_gpu(gpu, index):
    """Makes GPU `index` current and runs a cuBLAS product and an NVRTC-compiled kernel
    on it, so that a broken CUDA set-up stops here with one line, not mid-training."""
    import chainer
    from chainer.backends import cuda
    if not cuda.available:
        raise UsageError('--gpu %d: Chainer cannot use CuPy (%s); reinstall CuPy for your '
                         'CUDA with `make gpu` or `make gpu CUDA=13`'
                         % (gpu, _first_line(cuda._resolution_error)))
    try:
        device = chainer.get_device('@cupy:%d' % index)
        device.use()
        import cupy
        a = cupy.arange(16, dtype=cupy.float32).reshape(4, 4)
        value = float((a @ a).sum() + cupy.ElementwiseKernel(
            'float32 x', 'float32 y', 'y = x * 2', 'bertlib_probe')(a).sum())
    except Exception as e:  # missing cuBLAS or NVRTC, driver too old, GPU busy
        raise UsageError('--gpu %d: CUDA cannot run on GPU %d (%s: %s); check the driver '
                         '(nvidia-smi) and reinstall CuPy for your CUDA with `make gpu` or '
                         '`make gpu CUDA=13`' % (gpu, index, type(e).__name__, _first_line(e)))
    if value != 3920.0 + 240.0:
        raise UsageError('--gpu %d: GPU %d computed a wrong test sum (%s)' % (gpu, index, value))
    return device


def _bus_id(index):
    import cupy
    return cupy.cuda.Device(index).pci_bus_id


def _hostname():
    import socket
    return socket.gethostname()


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# The flags that name a file a script reads (`features`: evaluate_features.py's positional
# arguments): no output of the command may be one of them (`check_output`).
INPUT_FLAGS = ('input', 'text', 'features', 'train_features', 'train', 'eval', 'model',
               'label', 'vocab_file', 'bert_config_file', 'init_checkpoint')


def input_files(args):
    """[(flag, path)] of every file the parsed `args` name for reading."""
    found = []
    for name in INPUT_FLAGS:
        value = getattr(args, name, None)
        for path in value if isinstance(value, list) else [value]:
            if path and path != '-':
                found.append(('' if name == 'features' else '--' + name, path))
    return found


def check_output(args, path, flag='--output', follow_symlinks=True):
    """`fileio.check_output` of an output file against every input of `args`: one
    UsageError, before any work, for an output that names a folder, is in a folder that
    does not exist, or is one of the command's inputs (by file identity)."""
    fileio.check_output(path, flag, input_files(args), follow_symlinks)


def check_file(path, what):
    if not os.path.exists(path):
        raise UsageError('%s: %s not found' % (path, what))
    if os.path.isdir(path):
        raise UsageError('%s: %s is a directory, not a file' % (path, what))
    if not os.access(path, os.R_OK):
        raise UsageError('%s: %s is not readable' % (path, what))


def read_bert_config(path):
    """`modeling.BertConfig` of a bert_config.json; a config that cannot be used is a
    UsageError naming the file (and the line)."""
    from bertlib import modeling
    try:
        return modeling.BertConfig.from_json_file(path)
    except modeling.ConfigError as e:
        raise UsageError(str(e))


def load_tokenizer(args, config):
    """The tokenizer --vocab_file names, checked against the model's vocabulary size:
    a SentencePiece tokenizer for a tokenizer.json (or *.model), else WordPiece's."""
    from bertlib import sentencepiece_tokenization, tokenization
    join_ellipsis = getattr(args, 'join_ellipsis', False)
    text_prefix = getattr(args, 'text_prefix', None) or ''
    if sentencepiece_tokenization.is_sentencepiece_file(args.vocab_file):
        if args.do_lower_case != 'auto':
            raise UsageError('--do_lower_case %s: %s is a SentencePiece tokenizer, which '
                             'carries its own normalisation; leave the flag out'
                             % (args.do_lower_case, args.vocab_file))
        tokenizer = sentencepiece_tokenization.SentencePieceTokenizer(
            args.vocab_file, join_ellipsis=join_ellipsis, text_prefix=text_prefix)
        sentencepiece_tokenization.check_vocab_size(tokenizer, config.vocab_size,
                                                    args.bert_config_file)
        logger.info('tokenizer %s: SentencePiece unigram, %d pieces for %d embedding rows, '
                    'text prefix %r', args.vocab_file, tokenizer.vocab_size,
                    config.vocab_size, text_prefix)
        return tokenizer
    vocab = tokenization.load_vocab(args.vocab_file)
    tokenization.check_vocab_size(vocab, args.vocab_file, config.vocab_size,
                                  '%s (vocab_size in %s)' % (args.init_checkpoint,
                                                             args.bert_config_file))
    do_lower_case = tokenization.resolve_do_lower_case(args.do_lower_case, vocab)
    split_cjk = not tokenization.vocab_has_cjk_words(vocab)
    tokenizer = tokenization.FullTokenizer(args.vocab_file, do_lower_case=do_lower_case,
                                           tokenize_chinese_chars=split_cjk,
                                           join_ellipsis=join_ellipsis,
                                           text_prefix=text_prefix, vocab=vocab)
    logger.info('vocabulary %s: %d entries, do_lower_case=%s, tokenize_chinese_chars=%s',
                args.vocab_file, len(vocab), do_lower_case, split_cjk)
    return tokenizer


def load_bert(args, load_weights=True, read_only=False):
    """Config, tokenizer and pre-trained `BertModel` from the common flags, checked
    against each other before anything runs. Returns (config, tokenizer, bert).

    load_weights=False leaves the weights at zero, for a fine-tuned model file that
    holds all of them anyway. read_only=True memory-maps the weights where it can, for
    a model that is never trained (`checkpoints.load_model`)."""
    from bertlib import modeling
    check_file(args.bert_config_file, 'BERT config')
    check_file(args.vocab_file, 'vocabulary')
    check_file(args.init_checkpoint, 'checkpoint')
    config = read_bert_config(args.bert_config_file)
    # Before the model is built: a config asking for more than the checkpoint holds is
    # refused without allocating it. A fine-tuned model (load_weights=False) was trained
    # from this checkpoint, so its BERT has the same shapes (its loader checks them too).
    modeling.check_pretrained(config, args.init_checkpoint, args.bert_config_file)
    if args.max_seq_length > config.max_position_embeddings:
        raise UsageError('--max_seq_length %d exceeds the model\'s max_position_embeddings %d'
                         % (args.max_seq_length, config.max_position_embeddings))
    tokenizer = load_tokenizer(args, config)
    bert = modeling.BertModel(config, random_init=False)
    if load_weights:
        modeling.load_pretrained(bert, args.init_checkpoint, read_only=read_only)
    return config, tokenizer, bert
