from configparser import ConfigParser
import setuptools, shlex

# note: all settings are in settings.ini; edit there, not here
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o:cfg[o] for o in cfg_keys}

licenses = { # name, classifier, SPDX expression
    'apache2': ('Apache Software License 2.0','OSI Approved :: Apache Software License', 'Apache-2.0'),
    'mit': ('MIT License', 'OSI Approved :: MIT License', 'MIT'),
    'gpl2': ('GNU General Public License v2', 'OSI Approved :: GNU General Public License v2 (GPLv2)', 'GPL-2.0-only'),
    'gpl3': ('GNU General Public License v3', 'OSI Approved :: GNU General Public License v3 (GPLv3)', 'GPL-3.0-only'),
    'bsd3': ('BSD License', 'OSI Approved :: BSD License', 'BSD-3-Clause'),
}
statuses = [ '1 - Planning', '2 - Pre-Alpha', '3 - Alpha',
    '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive' ]
py_versions = cfg.get('python_versions', cfg['min_python']).split() # the versions CI runs

def reqs(key): return shlex.split(cfg.get(key, ''))
requirements = reqs('requirements')
if cfg.get('pip_requirements'): requirements += shlex.split(cfg.get('pip_requirements', ''))
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None, None))
# setuptools >= 77 writes the SPDX `License-Expression` (PEP 639) and deprecates License classifiers;
# older setuptools (e.g. a `--no-build-isolation` install) gets the classic License field and classifier.
if lic[2] and int(setuptools.__version__.split('.')[0]) >= 77: license_meta, license_cls = dict(license_expression=lic[2]), []
else: license_meta, license_cls = dict(license=lic[0]), (['License :: ' + lic[1]] if lic[1] else [])
# optional extras: export (ONNX), serve (web app); dev installs both and the development tools
extras = {'export': reqs('export_requirements'), 'serve': reqs('serve_requirements')}
extras['dev'] = extras['export'] + extras['serve'] + reqs('dev_requirements')

package_data = dict()
pkg_data = cfg.get('package_data', None)
if pkg_data:
    package_data[cfg['lib_name']] =  pkg_data.split() # split as multiple files might be listed
# Add package data to setup_cfg for setuptools.setup(..., **setup_cfg)
setup_cfg['package_data'] = package_data

setuptools.setup(
    name = cfg['lib_name'],
    license_files = ['LICENSE'],
    classifiers = [
        'Development Status :: ' + statuses[int(cfg['status']) - 1],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ['Programming Language :: Python :: '+o for o in ['3', '3 :: Only'] + py_versions] + license_cls,
    url = cfg['git_url'],
    packages = setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data = True,
    install_requires = requirements,
    extras_require = extras,
    dependency_links = cfg.get('dep_links','').split(),
    python_requires  = '>=' + cfg['min_python'],
    long_description = open('README.md', encoding='utf-8').read(),
    long_description_content_type = 'text/markdown',
    zip_safe = False,
    entry_points = {
        'console_scripts': cfg.get('console_scripts','').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']
    },
    **license_meta, **setup_cfg)
