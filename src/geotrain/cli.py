"""``geotrain``: serve, worker, migrate, inspect, weights, predict, user."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from geotrain.config import Settings


def _training_installed() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        print(
            "geotrain: workers need the training stack; install it with  pip install 'geotrain[train]'  "
            "(or run the API alone with --workers 0)",
            file=sys.stderr,
        )
        return False
    return True


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers > 0 and not _training_installed():
        return 2

    from geotrain.api.app import create_app

    app = create_app(Settings(), workers=args.workers)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("geotrain: HTTPS needs both --ssl-certfile and --ssl-keyfile", file=sys.stderr)
        return 2
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        # clients such as arcgis keep connections open; a stopping server does not wait on them for ever
        timeout_graceful_shutdown=5,
        log_config=None,  # uvicorn's loggers go through geotrain's handler (text or JSON)
    )  # fmt: skip
    return 0


def _worker(args: argparse.Namespace) -> int:
    from geotrain.jobs.db import make_engine, make_sessionmaker
    from geotrain.jobs.queue import Queue
    from geotrain.worker.loop import Worker

    if not _training_installed():
        return 2
    overrides = {k: v for k, v in (("worker_labels", args.labels), ("gpus", args.gpus)) if v is not None}
    settings = Settings().model_copy(update=overrides)
    settings.ensure_dirs()
    worker = Worker(settings, Queue(make_sessionmaker(make_engine(settings.effective_database_url))))

    def _stop(signum: int, _frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run_forever()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from geotrain.jobs.db import migrate

    migrate(Settings().effective_database_url)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from geotrain.stores import StorePathError, resolve
    from geotrain.training.data.export import ExportError
    from geotrain.training.data.inspect import inspect

    folder = Path(args.folder)
    if not folder.is_dir() and args.folder.startswith(("/fileShares/", "/rasterStores/", "/cloudStores/")):
        try:
            folder = resolve(args.folder, Settings().stores).local
        except StorePathError as exc:
            print(f"geotrain inspect: {args.folder}: {exc}", file=sys.stderr)
            return 2
    try:
        report = inspect(folder)
    except ExportError as exc:
        print(f"geotrain inspect: {args.folder}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_json(), indent=2) if args.json else report.as_text())
    return 0


def _weights(args: argparse.Namespace) -> int:
    from pathlib import Path

    from geotrain.task import catalog
    from geotrain.training.models import pretrained

    if args.import_from:
        try:
            imported = pretrained.import_weights(Path(args.import_from))
        except ValueError as exc:
            print(f"geotrain weights: {exc}", file=sys.stderr)
            return 2
        for name in imported:
            print(f"imported {name}")
    arches = sorted({b.lower() for info in catalog.BUILT.values() for b in info.backbones_built})
    print(f"ImageNet weights in {pretrained.cache_dir()}:")
    for arch in arches:
        found = pretrained.find_cached(arch)
        print(f"  {arch:<14} {found.name if found else '- (trains from random initialisation)'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from geotrain.dlpk.archive import PackageError
    from geotrain.dlpk.predict import default_output, predict

    image, package = Path(args.image), Path(args.package)
    try:
        out = Path(args.out) if args.out else default_output(package, image)
        features = Path(args.features) if args.features else None
        written = predict(package, image, out, args.padding, args.device, args.threshold, features)
    except (PackageError, OSError, ValueError) as exc:
        print(f"geotrain predict: {exc}", file=sys.stderr)
        return 2
    print(written)
    return 0


def _user(args: argparse.Namespace) -> int:
    from geotrain.jobs.accounts import Accounts
    from geotrain.jobs.db import make_engine, make_sessionmaker, migrate

    settings = Settings()
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        settings.ensure_dirs()
        migrate(url)  # as the embedded server does: the users' table may not exist yet
    engine = make_engine(url)
    users = Accounts(make_sessionmaker(engine))
    stores = [s.strip() for s in args.stores.split(",") if s.strip()] if getattr(args, "stores", None) else None
    try:
        if args.action == "add":
            if not args.password_stdin:
                print("geotrain user add: give the password on standard input (--password-stdin)", file=sys.stderr)
                return 2
            password = sys.stdin.readline().rstrip("\r\n")
            if len(password) < 8:
                print("geotrain user add: the password needs at least 8 characters", file=sys.stderr)
                return 2
            try:
                users.add(args.name, password, stores)
            except ValueError as exc:
                print(f"geotrain user add: {exc}", file=sys.stderr)
                return 2
            print(f"added {args.name}")
        elif args.action == "grant":
            if not users.grant(args.name, stores):
                print(f"geotrain user grant: no user '{args.name}'", file=sys.stderr)
                return 2
            print(f"{args.name}: {', '.join(stores) if stores is not None else 'every data store'}")
        elif args.action == "remove":
            if not users.remove(args.name):
                print(f"geotrain user remove: no user '{args.name}'", file=sys.stderr)
                return 2
            print(f"removed {args.name}")
        else:
            for account in users.list():
                granted = ", ".join(account.stores) if account.stores is not None else "every data store"
                print(f"{account.name}\t{granted}")
    finally:
        engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geotrain", description="ArcGIS-compatible deep learning training server")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="the API, with embedded workers (SQLite is migrated on start)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="embedded workers; 0 = API only")
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM); the arcgis client needs HTTPS")
    serve.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="a standalone worker on the configured database")
    worker.add_argument("--labels", help="what it runs, e.g. gpu,cpu (default: cpu, and gpu where a GPU is visible)")
    worker.add_argument("--gpus", help="the GPUs its training may use, e.g. 0,1, or none (default: all)")
    worker.set_defaults(func=_worker)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=_migrate)
    inspect = sub.add_parser("inspect", help="what an export holds, before training on it")
    inspect.add_argument("folder", help="an export folder, or a data-store path such as /fileShares/chips/x")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=_inspect)
    weights = sub.add_parser("weights", help="which backbones have ImageNet weights cached; import weight files")
    weights.add_argument(
        "--import", dest="import_from", metavar="FOLDER", help="copy torchvision weight files from here"
    )
    weights.set_defaults(func=_weights)
    predict = sub.add_parser(
        "predict",
        help="classify a raster's pixels or objects, or detect objects in it, with a .dlpk's own inference "
        "function (runs the package's code)",
    )
    predict.add_argument("package", help="a .dlpk written by geotrain")
    predict.add_argument("image", help="a raster (GeoTIFF or any format GDAL reads)")
    predict.add_argument(
        "--out",
        help="the GeoTIFF (pixel classification) or GeoJSON (detection, object classification) to write; default "
        "beside the image",
    )
    predict.add_argument(
        "--features", help="object classification: a GeoJSON of the objects to classify (default: the whole image)"
    )
    predict.add_argument(
        "--threshold", type=float, help="detection: the least confidence kept, 0..1 (multi-label: probability)"
    )
    predict.add_argument("--padding", type=int, help="border pixels of each tile predicted but not kept")
    predict.add_argument("--device", type=int, default=-2, help="-1 the CPU, N the GPU N, -2 a GPU if any")
    predict.set_defaults(func=_predict)
    user = sub.add_parser("user", help="the users of GEOTRAIN_AUTH=token: add, list, grant, remove")
    actions = user.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="a new user; the password is read from standard input")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--stores", help="the data stores the user may read, comma-separated (default: all)")
    grant = actions.add_parser("grant", help="set the data stores a user may read (without --stores: all)")
    grant.add_argument("name")
    grant.add_argument("--stores", help="comma-separated data-store paths, e.g. /fileShares/chips")
    actions.add_parser("list", help="the users and their data stores")
    remove = actions.add_parser("remove", help="remove a user and the tokens it holds")
    remove.add_argument("name")
    user.set_defaults(func=_user)
    args = parser.parse_args(argv)
    from geotrain.logs import configure

    configure(args.log_level, Settings().log_format)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
