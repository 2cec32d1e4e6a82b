"""Loading a pre-trained BERT from the flags (`bertlib.flags`): its files checked, its
config read, its tokenizer (WordPiece or SentencePiece) checked against the model's
vocabulary, and the model built with its weights."""

import logging
import os

from bertlib.errors import UsageError

logger = logging.getLogger(__name__)


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
