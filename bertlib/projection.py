"""2-D pictures of sentence features: stratified sampling, t-SNE/PCA projection, a
Japanese-capable font and a scatter plot coloured by label.

Shared by plot_features.py, cluster_features.py and evaluate_features.py.
"""

import importlib.util
import logging
import os
import warnings

import numpy as np

from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

METHODS = ('tsne', 'pca')

# t-SNE's neighbour search and gradient cost grow with the dimension; 50 principal
# components keep nearly all the neighbourhood structure of BERT features (the usual
# recipe of van der Maaten and of scikit-learn's own advice) at a fraction of the time.
TSNE_PCA_DIMS = 50

# Label shown for the empty label that bare-text input lines get.
NO_LABEL = '(no label)'


def stratified_sample(labels, n, seed):
    """Indices of `n` of the N points, drawn per class so that each class keeps its share.

    labels: sequence of N hashable labels. Each class gets round(n * share) points
    (largest remainders), and at least one while n is at least the number of classes.
    The draw within a class is seeded by `seed`. Returns a sorted (n,) int64 array.
    Raises UsageError when n exceeds N.
    """
    labels = np.asarray(labels, dtype=object)
    total = len(labels)
    if n > total:
        raise UsageError('a sample of %d is larger than the data (%d points)' % (n, total))
    if n < 1:
        raise UsageError('a sample must hold at least one point, got %d' % n)
    if n == total:
        return np.arange(total, dtype=np.int64)
    classes, inverse = np.unique(labels.astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    quotas = _class_quotas(counts, n)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == k), size=q, replace=False)
              for k, q in enumerate(quotas) if q]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _class_quotas(counts, n):
    """(K,) class sizes, sample size n -> (K,) points per class summing to n.

    Hamilton's largest-remainder rounding of n * share, then every empty class (while
    n >= K) takes one point from the class that is most over its exact share.
    """
    exact = n * counts / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quotas), kind='stable')
    quotas[order[:n - quotas.sum()]] += 1
    if n >= len(counts):
        for k in np.flatnonzero(quotas == 0):
            donors = np.flatnonzero(quotas > 1)
            donor = donors[np.argmax(quotas[donors] - exact[donors])]
            quotas[donor] -= 1
            quotas[k] = 1
    return quotas


def project_2d(X, method='tsne', perplexity=30, seed=0, source='the features'):
    """(N, D) features -> (N, 2) float64 coordinates by t-SNE or PCA, seeded.

    t-SNE is scikit-learn's Barnes-Hut TSNE with PCA initialisation, run on the first
    50 principal components when D > 50. Its perplexity must stay below N: a larger one
    is clipped to (N - 1) / 3, with a note in the log. `source` (a file name) is named in
    the error about degenerate features.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise UsageError('a 2-D projection needs at least 2 points, got %d' % len(X))
    check_spread(X, source)
    if method not in METHODS:
        raise ValueError('method must be one of %s, got %r' % (METHODS, method))
    if method == 'tsne' and len(X) < 4:
        logger.info('t-SNE needs at least 4 points, got %d: using PCA', len(X))
    if method == 'pca' or len(X) < 4:
        return _pca(X, 2, seed)
    return _tsne(X, perplexity, seed)


def check_spread(X, source):
    """UsageError when all (N, D) rows are the same point.

    Why: scikit-learn's t-SNE then divides its PCA start by a zero spread and crashes the
    whole process in native code (segmentation fault), and no projection could show
    anything. It happens with --max_seq_length 2, where every sentence is [CLS] [SEP].
    """
    spread = float(np.ptp(X, axis=0).max()) if X.size else 0.0
    if spread <= 1e-9 * max(1.0, float(np.abs(X).max()) if X.size else 0.0):
        raise UsageError('%s: all %d feature rows are the same point, so there is nothing '
                         'to project (were they extracted with a tiny --max_seq_length, '
                         'where every sentence is [CLS] [SEP]?)' % (source, len(X)))


def _pca(X, dims, seed):
    """(N, D) -> (N, dims) principal components; zero columns pad a narrower result."""
    from sklearn.decomposition import PCA
    keep = min(dims, X.shape[1], len(X))
    out = np.zeros((len(X), dims))
    if keep:
        out[:, :keep] = PCA(n_components=keep, random_state=seed).fit_transform(X)
    return out


def _tsne(X, perplexity, seed):
    """(N, D) -> (N, 2) by scikit-learn's Barnes-Hut t-SNE."""
    from sklearn.manifold import TSNE
    limit = (len(X) - 1) / 3.0
    if perplexity > limit:
        logger.info('perplexity %g is too large for %d points: using %.1f',
                    perplexity, len(X), limit)
        perplexity = limit
    if X.shape[1] > TSNE_PCA_DIMS and len(X) > TSNE_PCA_DIMS:
        X = _pca(X, TSNE_PCA_DIMS, seed)
    tsne = TSNE(n_components=2, perplexity=perplexity, init='pca', learning_rate='auto',
                random_state=seed)
    with warnings.catch_warnings(), one_openmp_thread():
        # PCA initialisation warns about its rescaling on every call; nothing to act on.
        warnings.simplefilter('ignore', FutureWarning)
        return tsne.fit_transform(X).astype(np.float64)


def one_openmp_thread():
    """A context that runs scikit-learn's OpenMP code on one thread.

    Two reasons. On a busy 2-core machine its thread barriers cost more than the second
    thread gains: MeanShift's thousands of one-point neighbour queries ran 40x slower
    with two threads, t-SNE of 5,197 points 1.5-2x slower; the clustering algorithms
    spend their time in BLAS, which keeps its threads. And GNU libgomp is not fork-safe:
    in a forked child, a parallel region with more than one thread hangs when the parent
    had run one before, while a one-thread region runs inline.
    """
    import sklearn.utils  # noqa: F401  (loads scikit-learn's OpenMP runtime to limit it)
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api='openmp')


def use_japanese_font():
    """Makes matplotlib draw Japanese text as glyphs, not boxes.

    Uses IPAexGothic from the `matplotlib-fontja` package (requirements.txt), else a CJK
    font installed on the system; DejaVu Sans stays as the fallback for other glyphs.
    Returns the family name chosen, or None (with a warning) when there is none.
    """
    import matplotlib
    from matplotlib import font_manager
    family = _register_fontja(font_manager) or _system_cjk_family(font_manager)
    if family is None:
        logger.warning('no Japanese font found (pip install matplotlib-fontja): Japanese '
                       'labels will be drawn as boxes')
        return None
    matplotlib.rcParams['font.family'] = [family, 'DejaVu Sans']
    return family


def _register_fontja(font_manager):
    """Adds matplotlib-fontja's IPAexGothic to matplotlib; its family name, or None."""
    # Located, not imported: importing the package would also overwrite the rcParams
    # font settings as a side effect.
    try:
        spec = importlib.util.find_spec('matplotlib_fontja')
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], 'fonts', 'ipaexg.ttf')
    if not os.path.exists(path):
        return None
    font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=path).get_name()


def _system_cjk_family(font_manager):
    """The first installed font family known to cover Japanese, or None."""
    wanted = ('IPAexGothic', 'IPAGothic', 'Noto Sans CJK JP', 'Noto Sans JP',
              'TakaoGothic', 'VL Gothic', 'Source Han Sans JP', 'Hiragino Sans', 'Yu Gothic',
              'MS Gothic')
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in wanted if name in installed), None)


def label_colors(count):
    """(count, 4) RGBA rows of distinct colours: tab10 up to 10 classes, tab20 up to 20,
    then tab20 + tab20b + tab20c (60), then evenly spaced hues."""
    from matplotlib import colormaps
    if count <= 10:
        return colormaps['tab10'](np.arange(count))
    # tab20 comes in dark/light pairs of one hue: the dark ten first keeps the largest
    # classes apart.
    pairs = np.r_[np.arange(0, 20, 2), np.arange(1, 20, 2)]
    if count <= 20:
        return colormaps['tab20'](pairs[:count])
    if count <= 60:
        pooled = np.concatenate([colormaps[name](np.arange(20))
                                 for name in ('tab20b', 'tab20c')])
        return np.concatenate([colormaps['tab20'](pairs), pooled])[:count]
    return colormaps['hsv'](np.linspace(0, 1, count, endpoint=False))


def label_palette(labels):
    """The colour of each label as `scatter` draws it.

    Returns (names, colors): the display names of the distinct labels, largest class
    first (ties in sorted order), and their (K, 4) RGBA colours. The empty label is shown
    as '(no label)'.
    """
    names = [display_name(label) for label in labels]
    classes, counts = np.unique(names, return_counts=True)
    ranking = np.argsort(-counts, kind='stable')
    return [str(classes[k]) for k in ranking], label_colors(len(classes))


def display_name(label):
    return NO_LABEL if label == '' else str(label)


def scatter(ax, xy, labels, title):
    """Draws (N, 2) points `xy` on `ax`, coloured by their N `labels`, with a legend of the
    label names (outside the axes, on the right, beyond 10 labels) and `title`.

    Classes are listed by size, largest first; points are drawn in a seeded random order
    so that no class hides the others.
    """
    names, colors = label_palette(labels)
    color_of = dict(zip(names, colors))
    point_colors = np.array([color_of[display_name(label)] for label in labels])
    draw_points(ax, xy, point_colors)
    _legend(ax, names, colors)
    ax.set_title(title)


def draw_points(ax, xy, colors):
    """(N, 2) points with (N, 4) RGBA colours, in a seeded random order, no ticks."""
    xy = np.asarray(xy)
    order = np.random.default_rng(0).permutation(len(xy))
    ax.scatter(xy[order, 0], xy[order, 1], c=np.asarray(colors)[order],
               s=marker_size(len(xy)), linewidths=0, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def marker_size(count):
    """Marker area in points²: large for a few dozen points, small for thousands."""
    return float(np.clip(5000.0 / max(count, 1), 3.0, 30.0))


def legend_handles(colors):
    """Coloured-dot legend handles, one per RGBA row."""
    from matplotlib.lines import Line2D
    return [Line2D([], [], linestyle='', marker='o', markersize=6, color=color)
            for color in colors]


def _legend(ax, names, colors):
    """A legend of coloured dots, one per name, inside the axes up to 10 names."""
    handles = legend_handles(colors[:len(names)])
    if len(names) <= 10:
        ax.legend(handles, names, loc='best', fontsize='small', framealpha=0.8)
    else:
        columns = 1 if len(names) <= 30 else 2
        ax.legend(handles, names, loc='upper left', bbox_to_anchor=(1.01, 1.0),
                  fontsize='small', ncol=columns, borderaxespad=0.0, frameon=False)


FIGURE_FORMATS = ('png', 'pdf', 'svg')


def figure_format(path):
    """The picture format named by `path`'s extension: png, pdf or svg; else UsageError."""
    extension = os.path.splitext(path)[1][1:].lower()
    if extension not in FIGURE_FORMATS:
        raise UsageError('%s: cannot tell the picture format from the extension %r; use '
                         'one of %s' % (path, '.' + extension if extension else '',
                                        ', '.join('.' + f for f in FIGURE_FORMATS)))
    return extension


def check_writable(path, what='--output'):
    """UsageError unless `path` can be created or replaced: checked before the slow work."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError('%s %s is a directory' % (what, path))
    if not os.path.isdir(directory):
        raise UsageError('%s %s: directory %s does not exist' % (what, path, directory))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError('%s %s: directory %s is not writable' % (what, path, directory))


# No side of a picture may exceed this many pixels: image viewers and browsers refuse or
# choke on larger ones (a 126,011-pixel-wide PNG took 139 s to write and opened nowhere).
MAX_PIXELS = 20000


def check_picture_size(width_inches, height_inches, dpi, path):
    """UsageError when a picture of this size would be too large to open."""
    width, height = width_inches * dpi, height_inches * dpi
    if max(width, height) > MAX_PIXELS:
        raise UsageError('%s: a picture of %d x %d pixels is too large to open (at most '
                         '%d a side): ask for fewer panels or points' % (path, width, height,
                                                                         MAX_PIXELS))


def save_figure(figure, path, dpi=150):
    """Writes `figure` to `path` in the format of its extension, complete or not at all;
    UsageError, before drawing, when it would be too large to open."""
    from bertlib.fileio import atomic_write
    check_picture_size(*figure.get_size_inches(), dpi, path)
    with atomic_write(path, 'wb') as stream:
        figure.savefig(stream, format=figure_format(path), dpi=dpi, bbox_inches='tight')
