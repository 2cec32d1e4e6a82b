"""Pictures: fonts (with the Japanese font choice), label colours, scatter panels, the
clustering comparison grid, the training curves, and saving a figure in the format its
file name asks for.

The drawing half of plot_features.py, cluster_features.py, evaluate_features.py and the
training scripts; the numbers they draw come from `projection`, `clustering` and
`training`. matplotlib is imported inside the functions, so that importing this module
(and the scripts that never draw) stays fast.
"""

import importlib.util
import logging
import os

import numpy as np

from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

logger = logging.getLogger(__name__)

# Label shown for the empty label that bare-text input lines get.
NO_LABEL = '(no label)'


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
    check_picture_size(*figure.get_size_inches(), dpi, path)
    with atomic_write(path, 'wb') as stream:
        figure.savefig(stream, format=figure_format(path), dpi=dpi, bbox_inches='tight')


NOISE_COLOR = (0.75, 0.75, 0.75, 1.0)


def cluster_colors(labels, predicted):
    """(N, 4) RGBA colours of N points by cluster, comparable with the ground truth panel.

    Clusters are matched one-to-one to labels (Hungarian matching on the overlap counts):
    a matched cluster takes its label's colour from label_palette; unmatched
    clusters take colours of tab20b in turn; noise (-1) is light grey.
    """
    from matplotlib import colormaps
    from scipy.optimize import linear_sum_assignment
    names, palette = label_palette(labels)
    index = {name: i for i, name in enumerate(names)}
    truth = np.array([index[display_name(label)] for label in labels])
    clusters, ids = np.unique(predicted, return_inverse=True)
    overlap = np.zeros((len(clusters), len(names)))
    np.add.at(overlap, (ids, truth), 1)
    overlap[clusters == -1] = -1  # noise is never matched
    rows, columns = linear_sum_assignment(-overlap)
    chosen = {int(r): palette[c] for r, c in zip(rows, columns) if clusters[r] != -1}
    spare = colormaps['tab20b'](np.arange(20))
    table = []
    for r, cluster_id in enumerate(clusters):
        if cluster_id == -1:
            table.append(NOISE_COLOR)
        elif r in chosen:
            table.append(chosen[r])
        else:
            table.append(spare[(r - len(chosen)) % 20])
    return np.asarray(table)[ids]


def panel_title(name, outcome, timeout):
    """Two lines: the algorithm, then its time, clusters, NMI and ARI or what went wrong."""
    if outcome.status == 'timeout':
        return '%s\ntimeout after %.0f s' % (name, timeout)
    if outcome.status.startswith('failed'):
        return '%s\nfailed' % name
    _, seconds, result = outcome.value
    note = ', not converged' if 'converge' in outcome.status else ''
    return ('%s (%d clusters%s)\n%.1f s   NMI %.2f   ARI %.2f'
            % (name, result['clusters'], note, seconds, result['nmi'], result['ari']))


def draw_grid(figure, xy, labels, results, columns, timeout, title):
    """The comparison figure: the ground truth, then one panel per algorithm, on the
    (N, 2) coordinates `xy`, `columns` panels a row.

    results: list of (name, Outcome) from clustering.run_guarded(clustering.evaluate,
    ...). The label legend takes the first free slot of the grid, or sits right of the
    last column.
    """
    panels = len(results) + 1
    rows = -(-panels // columns)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    scatter(axes[0], xy, labels, '')
    axes[0].set_title('ground truth\n%d labels' % len(set(labels)), fontsize='medium')
    axes[0].get_legend().remove()
    names, colors = label_palette(labels)
    handles = legend_handles(colors)
    for ax, (name, outcome) in zip(axes[1:], results):
        _draw_panel(ax, xy, labels, name, outcome, timeout)
    for ax in axes[panels:]:
        ax.axis('off')
    where = axes[panels] if panels < len(axes) else None
    if where is not None:
        where.legend(handles, names, loc='center', frameon=False,
                     ncol=1 if len(names) <= 20 else 2)
    else:
        figure.legend(handles, names, loc='center left', bbox_to_anchor=(1.0, 0.5),
                      fontsize='small', frameon=False)
    figure.suptitle(title)


def _draw_panel(ax, xy, labels, name, outcome, timeout):
    if outcome.value is None:
        draw_points(ax, xy, np.tile(NOISE_COLOR, (len(xy), 1)))
        word = 'timeout' if outcome.status == 'timeout' else 'failed'
        ax.text(0.5, 0.5, word, transform=ax.transAxes, ha='center', va='center',
                color='tab:red', fontsize='x-large', fontweight='bold')
        if word == 'failed':
            reason = outcome.status[len('failed: '):]
            ax.text(0.5, 0.38, reason[:60], transform=ax.transAxes, ha='center',
                    va='center', color='tab:red', fontsize='x-small', wrap=True)
    else:
        draw_points(ax, xy, cluster_colors(labels, outcome.value[0]))
    ax.set_title(panel_title(name, outcome, timeout), fontsize='medium')


def plot_curves(records, path):
    """Train/eval loss and acc1/acc2 per epoch, as the original BERT-DML's
    results_*.png."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    epochs = [r['epoch'] for r in records]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, [r['T/loss'] for r in records], 'o-', label='train loss')
    axes[0].plot(epochs, [r['D/loss'] for r in records], 's-', label='eval loss')
    axes[0].set_xlabel('epoch')
    axes[0].set_ylabel('loss')
    axes[0].legend()
    for key, style in (('T/acc1', 'o-'), ('D/acc1', 's-'), ('T/acc2', 'o--'),
                       ('D/acc2', 's--')):
        axes[1].plot(epochs, [r[key] for r in records], style, label=key)
    axes[1].set_xlabel('epoch')
    axes[1].set_ylabel('score')
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    with atomic_write(path, 'wb') as f:
        figure.savefig(f, format='png', dpi=100)
    plt.close(figure)


def draw_confusion(matrix, rates, names, path, title):
    """A confusion matrix picture: (K, K) counts `matrix` and row rates `rates` (rows:
    true, columns: predicted), the rates as colours and each cell annotated with its
    count (up to 30 classes). Japanese label names are drawn with their glyphs."""
    from matplotlib.figure import Figure
    use_japanese_font()
    side = min(4.0 + 0.45 * len(names), 40.0)
    figure = Figure(figsize=(side + 1.5, side), layout='constrained')
    ax = figure.subplots()
    image = ax.imshow(rates, cmap='Blues', vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, label='rate of the true class')
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    if len(names) <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha='center', va='center', fontsize='small',
                    color='white' if rates[i, j] > 0.5 else 'black')
    ax.set_title(title)
    save_figure(figure, path, dpi=100)
