"""`python -m tools.assets list | fetch [NAME...]`: the asset registry from the command line.

The registry itself is `dnnlib.assets`, where metrics and training (layers below tools/) can reach it.
`from tools import assets` keeps working for code written against the old path: every name of the
registry resolves here to the object in dnnlib.assets (the same ASSETS dict, the same functions).
"""

import sys

import dnnlib
from dnnlib import assets as registry

#----------------------------------------------------------------------------

def __getattr__(name):
    return getattr(registry, name)

def _format_size(size):
    if size is None:
        return '-'
    for unit in ['B', 'KB', 'MB', 'GB']:
        if size < 1024 or unit == 'GB':
            return f'{size:.0f} {unit}' if unit == 'B' else f'{size:.1f} {unit}'
        size /= 1024

def _cli():
    """The click group behind `python -m tools.assets`."""
    import click

    @click.group()
    def cli():
        """Pretrained detectors and sample slides: list them, or fetch them into the cache."""

    @cli.command(name='list')
    def list_cmd():
        """List the registered assets and whether they are cached."""
        rows = [['Name', 'Cached', 'Size', 'Source', 'Description']]
        for a in registry.list_assets():
            rows.append([a.name, 'yes' if a.cached else 'no', _format_size(a.size),
                         a.source or ' > '.join('url' if s.startswith('url:') else s for s in a.sources),
                         a.description])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            click.echo('  '.join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]))

    @cli.command(name='fetch')
    @click.argument('names', nargs=-1, metavar='[NAME]...')
    @click.option('--quiet', is_flag=True, help='Do not print pip output or notes while downloading.')
    def fetch_cmd(names, quiet):
        """Fetch and verify the named assets (all when none are named); print their paths."""
        import tqdm
        try:
            names = list(names) or list(registry.ASSETS)
            for name in names:
                registry.get_asset(name)
            results = []
            for name in tqdm.tqdm(names, desc='assets', unit='asset', file=sys.stderr):
                path = registry.fetch(name, verbose=not quiet)
                results.append((name, path, registry.asset_source(name)))
        except dnnlib.util.UserError as err:
            raise click.ClickException(str(err))
        for name, path, source in results:
            click.echo(f'{name}: {path} ({source})')

    return cli

#----------------------------------------------------------------------------

if __name__ == '__main__':
    _cli()()  # pylint: disable=no-value-for-parameter
