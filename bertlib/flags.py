"""The flags the scripts share: range types for argparse (`integer`, `real`, the size
bounds, --seed), the flag groups of a pre-trained BERT and of training, --bert_dir and
the three file flags it stands for, and the check that no output names an input."""

import math
import os

from bertlib import distributed, fileio
from bertlib.errors import UsageError


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
